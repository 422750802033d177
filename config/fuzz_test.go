package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that a file it accepts also
// passes Validate, and that every problem it reports is placed on a line of
// the file.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		minimal,
		"",
		"[kubernetes]\nkubeconfig = \"/k\"\ningress_class = 5\n[http]\nlistne = 1\nread_timeout = \"5 seconds\"\n",
		"http.listne = 1\nkubernetes = { kubeconfig = \"/k\", nope = true }\n[foo.bar]\nx = 1\n[[routes]]\n",
		"[kubernetes]\nserver = \"https://api:6443\"\nca_file = \"ca\"\nwatch_namespaces = [\"a\", \"a\", 3]\n",
		"[kubernetes]\nkubeconfig = \"\"\"/k\nlistne = 1\n\"\"\"\n[http]\nlisten = \n",
		"[admin]\nlisten = \":80\"\nx.y.z = 1\n[https]\nlisten = \":443\"\n",
	} {
		f.Add([]byte(s))
	}
	if data, err := os.ReadFile("../gateway.toml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "f.toml")
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("Parse accepted a Config that Validate rejects: %v", verr)
			}
			return
		}
		if cfg != nil {
			t.Fatal("Config returned with an error")
		}
		var cerr *Error
		if !errors.As(err, &cerr) || len(cerr.Problems) == 0 {
			t.Fatalf("error %T without problems: %v", err, err)
		}
		lines := strings.Count(string(data), "\n") + 1
		for _, p := range cerr.Problems {
			if p.Line < 0 || p.Line > lines {
				t.Errorf("problem on line %d of a %d-line file: %v", p.Line, lines, p)
			}
		}
	})
}
