package proxy

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/edgegate/edgegate/route"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestAccessLog(t *testing.T) {
	t.Parallel()
	var buf syncBuf
	h := newHarness(t, func(c *Config) {
		c.AccessLog = true
		c.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	})
	ok := backend(t, named("ok"))
	h.publish([]route.Route{rt("a.test", "/", route.Prefix, "i", 0)}, be("ok", ok))
	h.get("a.test", "/hello?secret=1")
	h.get("b.test", "/nope")
	waitFor(t, "two access log lines", func() bool { return strings.Count(buf.String(), "msg=access") == 2 })
	out := buf.String()
	for _, want := range []string{"method=GET host=a.test path=/hello status=200", "upstream=" + ok, "bytes=18", "host=b.test path=/nope status=404", "bytes=19"} {
		if !strings.Contains(out, want) {
			t.Errorf("access log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "secret") {
		t.Errorf("query string logged:\n%s", out)
	}
}
