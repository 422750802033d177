package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/config"
)

func TestRealMain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("good.toml", "[kubernetes]\nkubeconfig = \"kc\"\n")
	bad := write("bad.toml", "[kubernetes]\nkubeconfig = \"kc\"\n\n[http]\nlistne = \":80\"\nread_timeout = \"5 seconds\"\n")
	syntax := write("syntax.toml", "[kubernetes\n")

	for _, tc := range []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string   // exact, "" = empty
		wantStderr []string // substrings; nil = empty stderr
	}{
		{
			name:       "version",
			args:       []string{"-version"},
			wantStdout: "edgegate " + buildVersion() + " (" + runtime.Version() + ")\n",
		},
		{
			name:       "check good file",
			args:       []string{"-check-config", "-config", good},
			wantStdout: good + ": ok\n",
		},
		{
			name:       "check shipped sample",
			args:       []string{"-check-config", "-config", "gateway.toml"},
			wantStdout: "gateway.toml: ok\n",
		},
		{
			name:     "check bad file reports every problem",
			args:     []string{"-check-config", "-config", bad},
			wantCode: 1,
			wantStderr: []string{
				bad + `:5: unknown key "http.listne"`,
				bad + `:6: http.read_timeout: invalid duration "5 seconds"`,
			},
		},
		{
			name:       "check syntax error",
			args:       []string{"-config", syntax, "-check-config"},
			wantCode:   1,
			wantStderr: []string{syntax + ":1: syntax error"},
		},
		{
			name:       "run with a bad file",
			args:       []string{"-config", bad},
			wantCode:   1,
			wantStderr: []string{bad + ":5: unknown key"},
		},
		{
			name:       "missing file",
			args:       []string{"-check-config", "-config", filepath.Join(dir, "none.toml")},
			wantCode:   1,
			wantStderr: []string{"read config: open ", "no such file"},
		},
		{
			name:       "unknown flag",
			args:       []string{"-nope"},
			wantCode:   2,
			wantStderr: []string{"flag provided but not defined: -nope", "-check-config"},
		},
		{
			name:       "stray argument",
			args:       []string{"-check-config", "gateway.toml"},
			wantCode:   2,
			wantStderr: []string{`unexpected argument "gateway.toml"`},
		},
		{
			name:       "help",
			args:       []string{"-h"},
			wantStderr: []string{"-config file", `(default "/etc/edgegate/gateway.toml")`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := realMain(tc.args, &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.wantCode, stderr.String())
			}
			if stdout.String() != tc.wantStdout {
				t.Errorf("stdout %q, want %q", stdout.String(), tc.wantStdout)
			}
			if tc.wantStderr == nil && stderr.Len() > 0 {
				t.Errorf("unexpected stderr:\n%s", stderr.String())
			}
			for _, want := range tc.wantStderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
		})
	}
}

func TestNewLogger(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		format, level string
		wantPrefix    string
		wantDebug     bool
	}{
		{"text", "info", "time=", false},
		{"json", "debug", "{", true},
	} {
		cfg := mustDefault(t)
		cfg.Log.Format, cfg.Log.Level = tc.format, tc.level
		var buf bytes.Buffer
		logger := newLogger(cfg, &buf)
		logger.Debug("d")
		logger.Info("i")
		out := buf.String()
		if !strings.HasPrefix(out, tc.wantPrefix) {
			t.Errorf("%s: output %q", tc.format, out)
		}
		if got := strings.Count(out, "\n") == 2; got != tc.wantDebug {
			t.Errorf("%s/%s: debug logged = %v:\n%s", tc.format, tc.level, got, out)
		}
	}
}

func mustDefault(t *testing.T) *config.Config {
	t.Helper()
	return config.Default()
}
