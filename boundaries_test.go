package main

import (
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The package boundaries of docs/architecture.md ("Package boundaries"),
// checked against the imports of every package's non-test files.

const modulePath = "github.com/edgegate/edgegate"

// boundaryRules maps a package (its path inside the module) to the internal
// packages its non-test files may import. A package missing from the table
// fails the test: a new package gets its row in architecture.md and here.
var boundaryRules = map[string][]string{
	"balancer":  {},
	"route":     {"balancer"},
	"discovery": {"route", "balancer"},
	"tlsmgr":    {"route"},
	"cluster":   {},
	"proxy":     {"route", "balancer"},
	"admin":     {"route"},
	"config":    {},
}

// listedPackage is one line of go list's output.
type listedPackage struct {
	path    string // inside the module: "proxy", "" for the root
	name    string // package clause: "main" for commands
	imports []string
}

// internalPath returns the module-relative path of an import inside the
// module, and false for the standard library and other modules.
func internalPath(imp string) (string, bool) {
	switch {
	case imp == modulePath:
		return "", true
	case strings.HasPrefix(imp, modulePath+"/"):
		return imp[len(modulePath)+1:], true
	}
	return "", false
}

func isInternalHelper(rel string) bool {
	return rel == "internal" || strings.HasPrefix(rel, "internal/")
}

func display(rel string) string {
	if rel == "" {
		return "the root package"
	}
	return rel
}

// boundaryViolations returns one message per import that breaks a rule.
func boundaryViolations(pkgs []listedPackage) []string {
	var out []string
	for _, p := range pkgs {
		for _, imp := range p.imports {
			dep, ok := internalPath(imp)
			if !ok {
				continue
			}
			// Test and demo helpers under internal/ serve commands, e2e
			// and each other, never the product's packages.
			if isInternalHelper(dep) && p.name != "main" && !isInternalHelper(p.path) && p.path != "e2e" {
				out = append(out, display(p.path)+" imports "+imp+
					": only main packages, e2e and internal/... helpers may import internal/... packages")
			}
		}
		// Commands (the root, bench/..., internal/demo), helpers under
		// internal/ and the test-only e2e package may import anything
		// internal.
		if p.name == "main" || isInternalHelper(p.path) || p.path == "e2e" {
			continue
		}
		allowed, ok := boundaryRules[p.path]
		if !ok {
			out = append(out, "package "+p.path+" has no row in architecture.md's package table "+
				"(add one there and to boundaryRules)")
			continue
		}
		for _, imp := range p.imports {
			dep, ok := internalPath(imp)
			if !ok || isInternalHelper(dep) || slices.Contains(allowed, dep) {
				continue
			}
			rule := "nothing internal"
			if len(allowed) > 0 {
				rule = "only " + strings.Join(allowed, ", ")
			}
			out = append(out, p.path+" imports "+imp+": architecture.md allows "+p.path+" to import "+rule)
		}
	}
	return out
}

// listPackages runs go list over the module: import path, package name and
// the imports of non-test files (.Imports, not .TestImports).
func listPackages(t *testing.T) []listedPackage {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command not found: %v", err)
	}
	cmd := exec.Command(goTool, "list", "-e", "-f", `{{.ImportPath}}	{{.Name}}	{{join .Imports " "}}`, "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []listedPackage
	for line := range strings.Lines(string(stdout)) {
		line = strings.TrimRight(line, "\n")
		if line == "" {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 3 {
			t.Fatalf("go list: unexpected line %q", line)
		}
		rel, ok := internalPath(fields[0])
		if !ok {
			t.Fatalf("go list: package %s outside module %s", fields[0], modulePath)
		}
		pkgs = append(pkgs, listedPackage{path: rel, name: fields[1], imports: strings.Fields(fields[2])})
	}
	return pkgs
}

func TestPackageBoundaries(t *testing.T) {
	pkgs := listPackages(t)
	seen := map[string]bool{}
	for _, p := range pkgs {
		seen[p.path] = true
	}
	// A typo in the module path or a broken go list would list nothing and
	// pass: make sure the packages the table is about were seen.
	for _, must := range []string{"", "balancer", "route", "proxy", "discovery"} {
		if !seen[must] {
			t.Fatalf("go list did not report %s: %d packages listed", display(must), len(pkgs))
		}
	}
	for _, v := range boundaryViolations(pkgs) {
		t.Error(v)
	}
}

// TestPackageBoundariesRules checks that the checker catches what it should,
// with the messages it should.
func TestPackageBoundariesRules(t *testing.T) {
	t.Parallel()
	m := func(rel string) string {
		if rel == "" {
			return modulePath
		}
		return modulePath + "/" + rel
	}
	for _, tc := range []struct {
		name string
		pkg  listedPackage
		want []string
	}{
		{"allowed", listedPackage{"proxy", "proxy", []string{"net", m("route"), m("balancer"), "github.com/valyala/fasthttp"}}, nil},
		{"nothing internal", listedPackage{"balancer", "balancer", []string{m("route")}},
			[]string{"balancer imports " + m("route") + ": architecture.md allows balancer to import nothing internal"}},
		{"not in the list", listedPackage{"proxy", "proxy", []string{m("route"), m("discovery")}},
			[]string{"proxy imports " + m("discovery") + ": architecture.md allows proxy to import only route, balancer"}},
		{"config", listedPackage{"config", "config", []string{m("proxy")}},
			[]string{"config imports " + m("proxy") + ": architecture.md allows config to import nothing internal"}},
		{"root package is not a library", listedPackage{"admin", "admin", []string{m("")}},
			[]string{"admin imports " + m("") + ": architecture.md allows admin to import only route"}},
		{"internal helper from a library", listedPackage{"discovery", "discovery", []string{m("internal/controlplane")}},
			[]string{"discovery imports " + m("internal/controlplane") + ": only main packages, e2e and internal/... helpers may import internal/... packages"}},
		{"internal helper from main", listedPackage{"internal/demo", "main", []string{m("internal/podnet"), m("config")}}, nil},
		{"internal helper from the root", listedPackage{"", "main", []string{m("internal/podnet"), m("proxy")}}, nil},
		{"helper from a helper", listedPackage{"internal/gatewayproc", "gatewayproc", []string{m("internal/podnet")}}, nil},
		{"unknown package", listedPackage{"health", "health", nil},
			[]string{"package health has no row in architecture.md's package table (add one there and to boundaryRules)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := boundaryViolations([]listedPackage{tc.pkg}); !slices.Equal(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}
