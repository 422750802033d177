package main

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/edgegate/edgegate/config"
)

// An https.listen the config file never wrote (":443") that cannot be
// bound leaves HTTPS off and the gateway running, loudly; one the file
// wrote, or one ACME needs, is required.
func TestListenDefaultHTTPSUnavailable(t *testing.T) {
	// Make :443 unavailable: hold it, or find it held or privileged.
	if hold, err := net.Listen("tcp", config.DefaultHTTPSListen); err == nil {
		defer hold.Close()
	} else if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EACCES) {
		t.Skipf("cannot make %s unavailable: %v", config.DefaultHTTPSListen, err)
	}
	parse := func(extra string) *config.Config {
		t.Helper()
		c, err := config.Parse([]byte("[kubernetes]\nkubeconfig = \"/k\"\n[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"+extra), "gateway.toml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	var logs bytes.Buffer
	l, err := listen(parse(""), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("default https.listen unavailable: %v, want HTTPS off", err)
	}
	l.close()
	if l.https != nil || l.http == nil || l.admin == nil {
		t.Errorf("listeners http=%v https=%v admin=%v, want https off", l.http, l.https, l.admin)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "HTTPS") {
		t.Errorf("no error logged: %q", logs.String())
	}

	for _, extra := range []string{
		"[https]\nlisten = \":443\"\n",
		"[acme]\nenabled = true\ncache_dir = \"/tmp/acme\"\n",
	} {
		l, err := listen(parse(extra), slog.New(slog.DiscardHandler))
		if err == nil {
			l.close()
			t.Errorf("%q: listening went on without HTTPS, want an error", extra)
		} else if !strings.Contains(err.Error(), "https listener") {
			t.Errorf("%q: %v", extra, err)
		}
	}
}
