package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Load reads the file at path and parses it with Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes a gateway.toml file over Default and validates the result.
// name is the file's path: it prefixes every problem, and relative paths in
// the file are resolved against its directory.
//
// On any problem Parse returns a nil Config and an *Error listing every
// problem found: a TOML syntax error (decoding stops there), then unknown
// sections and keys, values of the wrong type or format, and failed
// validation rules, each with the line it is on.
func Parse(data []byte, name string) (*Config, error) {
	cfg := Default()

	var top map[string]toml.Primitive
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&top)
	if err != nil {
		p := Problem{File: name, Msg: err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			p.Line = syntaxLine(data, pe.Position)
			p.Msg = "syntax error: " + pe.Message
		}
		return nil, &Error{Problems: []Problem{p}}
	}

	d := decoder{md: &md, file: name, lines: make(map[string]int)}
	d.decode(reflect.ValueOf(cfg).Elem(), top)
	if _, ok := d.lines["https.listen"]; ok {
		cfg.HTTPS.listenIsDefault = false
	}

	// A key whose value did not decode still holds its default: do not
	// report it a second time.
	bad := make(map[string]bool, len(d.problems))
	for _, p := range d.problems {
		bad[p.Key] = true
	}
	for _, p := range cfg.validate() {
		if bad[p.Key] {
			continue
		}
		p.File = name
		p.Line = d.lineOf(p.Key)
		d.problems = append(d.problems, p)
	}
	if err := errorOf(d.problems); err != nil {
		return nil, err
	}

	dir := filepath.Dir(name)
	for _, p := range []*string{
		&cfg.Kubernetes.Kubeconfig, &cfg.Kubernetes.TokenFile, &cfg.Kubernetes.CAFile,
		&cfg.HTTPS.DefaultCert, &cfg.HTTPS.DefaultKey, &cfg.ACME.CAFile, &cfg.ACME.CacheDir,
	} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return cfg, nil
}

// syntaxLine returns the line of a syntax error. The toml lexer counts the
// newline that ends a line before it reports an error found at that newline
// ("[http\n"), so Position.Line can be one too far; the byte offset is
// exact. Offsets are into the text after a byte order mark.
func syntaxLine(data []byte, pos toml.Position) int {
	for _, bom := range []string{"\xff\xfe", "\xfe\xff", "\xef\xbb\xbf"} {
		if bytes.HasPrefix(data, []byte(bom)) {
			data = data[len(bom):]
			break
		}
	}
	if pos.Start <= 0 || pos.Start > len(data) {
		return pos.Line
	}
	return 1 + bytes.Count(data[:pos.Start], []byte("\n"))
}

// decoder decodes one key at a time, so that one bad value does not hide the
// problems after it (toml.Decode stops at the first). It reads sections and
// keys from the Config struct's toml tags.
type decoder struct {
	md       *toml.MetaData
	file     string
	lines    map[string]int // dotted key -> line, for every section and key seen
	problems []Problem
}

func (d *decoder) add(key toml.Key, line int, format string, args ...any) {
	d.problems = append(d.problems, Problem{
		File: d.file,
		Line: line,
		Key:  key.String(),
		Msg:  fmt.Sprintf(format, args...),
	})
}

// lineOf returns the line of a dotted key, or of its section when the key is
// not in the file, or 0.
func (d *decoder) lineOf(key string) int {
	if l, ok := d.lines[key]; ok {
		return l
	}
	if section, _, ok := strings.Cut(key, "."); ok {
		return d.lines[section]
	}
	return 0
}

func (d *decoder) decode(cfg reflect.Value, top map[string]toml.Primitive) {
	sections := tagged(cfg)
	for name, prim := range top {
		key := toml.Key{name}
		line := d.line(prim)
		d.lines[key.String()] = line

		sec, ok := sections[name]
		if !ok {
			what := "key"
			if typ := d.md.Type(name); isTable(typ) || typ == "ArrayHash" {
				what = "section"
			}
			d.add(key, line, "unknown %s %s%s", what, quoteKey(key), suggest(name, sections))
			continue
		}
		if typ := d.md.Type(name); !isTable(typ) {
			d.add(key, line, "%s: expected a table, got %s", key, typeName(typ))
			continue
		}
		var keys map[string]toml.Primitive
		if err := d.md.PrimitiveDecode(prim, &keys); err != nil {
			d.add(key, line, "%s: %v", key, err) // not expected: it is a table
			continue
		}

		fields := tagged(sec)
		for name, prim := range keys {
			key := toml.Key{key[0], name}
			line := d.line(prim)
			d.lines[key.String()] = line
			f, ok := fields[name]
			if !ok {
				d.add(key, line, "unknown key %s%s", quoteKey(key), suggest(name, fields))
				continue
			}
			d.field(key, line, prim, f)
		}
	}
}

// field decodes one key's value into f, which keeps its default on failure.
func (d *decoder) field(key toml.Key, line int, prim toml.Primitive, f reflect.Value) {
	want := expect(f.Type())
	if got := d.md.Type(key...); !slices.Contains(want.types, got) {
		d.add(key, line, "%s: expected %s, got %s", key, want.desc, typeName(got))
		return
	}
	v := reflect.New(f.Type())
	if err := d.md.PrimitiveDecode(prim, v.Interface()); err != nil {
		msg := "expected " + want.desc
		var pe toml.ParseError
		if errors.As(err, &pe) { // a value of the right type but out of range or badly formatted
			msg = pe.Message
		}
		d.add(key, line, "%s: %s", key, msg)
		return
	}
	f.Set(v.Elem())
}

// line returns the line a table or key is defined on. The toml package does
// not export key positions, but it puts the position of the key being
// decoded into the ParseError it returns when an Unmarshaler fails, so a
// probe that always fails reveals it. Tables created implicitly by dotted
// keys or [a.b] headers have no position of their own: they are placed at
// their first child.
func (d *decoder) line(prim toml.Primitive) int {
	var pe toml.ParseError
	if errors.As(d.md.PrimitiveDecode(prim, &lineProbe{}), &pe) && pe.Position.Line > 0 {
		return pe.Position.Line
	}
	var children map[string]toml.Primitive
	if d.md.PrimitiveDecode(prim, &children) != nil {
		return 0
	}
	first := 0
	for _, c := range children {
		if l := d.line(c); l > 0 && (first == 0 || l < first) {
			first = l
		}
	}
	return first
}

var errProbe = errors.New("config: line probe")

type lineProbe struct{}

func (*lineProbe) UnmarshalTOML(any) error { return errProbe }

// tagged maps the toml tags of a struct's fields to the fields.
func tagged(v reflect.Value) map[string]reflect.Value {
	t := v.Type()
	m := make(map[string]reflect.Value, t.NumField())
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ","); tag != "" && tag != "-" {
			m[tag] = v.Field(i)
		}
	}
	return m
}

type expectation struct {
	types []string // toml.MetaData.Type values accepted
	desc  string
}

var durationType = reflect.TypeFor[Duration]()

// expect returns what the file must hold for a field of type t.
func expect(t reflect.Type) expectation {
	if t == durationType {
		return expectation{[]string{"String"}, `a duration string like "5s"`}
	}
	switch t.Kind() {
	case reflect.String:
		return expectation{[]string{"String"}, "a string"}
	case reflect.Bool:
		return expectation{[]string{"Bool"}, "a boolean"}
	case reflect.Int:
		return expectation{[]string{"Integer"}, "an integer"}
	case reflect.Float64:
		return expectation{[]string{"Float", "Integer"}, "a number"}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return expectation{[]string{"Array"}, "an array of strings"}
		}
	}
	panic("config: no TOML mapping for field type " + t.String())
}

// isTable reports whether a toml.MetaData.Type value is a table; tables
// created implicitly (by dotted keys or [a.b] headers) have no type.
func isTable(typ string) bool { return typ == "Hash" || typ == "" }

func typeName(typ string) string {
	switch typ {
	case "Bool":
		return "boolean"
	case "Hash", "":
		return "table"
	case "ArrayHash":
		return "array of tables"
	}
	return strings.ToLower(typ)
}

// quoteKey quotes a dotted key for a message: "http.listen", or as TOML
// writes it when a piece needs quotes: kubernetes."kube config".
func quoteKey(key toml.Key) string {
	s := key.String()
	if strings.Contains(s, `"`) {
		return s
	}
	return `"` + s + `"`
}

// suggest returns ` (did you mean "x"?)` for the closest known name, if it is
// close enough to be a typo (one edit per three bytes, at least one), or "".
func suggest(name string, known map[string]reflect.Value) string {
	best, bestDist := "", max(1, len(name)/3)+1
	for k := range known {
		if dist := editDistance(name, k); dist < bestDist || (dist == bestDist && k < best) {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
