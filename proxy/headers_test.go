package proxy

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func parseReq(tb testing.TB, raw string) *fasthttp.Request {
	tb.Helper()
	var req fasthttp.Request
	req.Header.DisableNormalizing()
	if err := req.Header.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		tb.Skipf("unparsable: %v", err)
	}
	return &req
}

const sampleReq = "GET /a?b=c HTTP/1.1\r\n" +
	"Host: Shop.Example\r\n" +
	"User-Agent: test\r\n" +
	"Connection: keep-alive, X-Hop\r\n" +
	"Keep-Alive: 5\r\n" +
	"X-Hop: 1\r\n" +
	"x-forwarded-for: 1.1.1.1\r\n" +
	"Cookie: a=b\r\n" +
	"Accept: */*\r\n\r\n"

func TestRewriteRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		raw      string
		ip, port string
		want     []string // exact lines expected
		gone     []string // lower-case names that must be absent
	}{
		{
			name: "sample", raw: sampleReq, ip: "192.0.2.7", port: "8080",
			want: []string{"Host: Shop.Example", "User-Agent: test", "Cookie: a=b", "Accept: */*",
				"X-Forwarded-For: 1.1.1.1, 192.0.2.7", "X-Real-IP: 192.0.2.7", "X-Forwarded-Proto: http",
				"X-Forwarded-Host: Shop.Example", "X-Forwarded-Port: 8080"},
			gone: []string{"connection", "keep-alive", "x-hop"},
		},
		{
			name: "connection names special and protected headers",
			raw:  "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Type: a/b\r\nconnection: content-type, host, content-length, COOKIE\r\ncookie: x=y\r\n\r\n",
			ip:   "::1",
			want: []string{"Host: h", "Content-Length: 0", "X-Forwarded-For: ::1"},
			gone: []string{"content-type", "cookie", "connection"},
		},
		{
			name: "all hop-by-hop",
			raw: "GET / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: websocket\r\nProxy-Connection: x\r\n" +
				"Proxy-Authorization: y\r\nProxy-Authenticate: z\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
			gone: []string{"te", "trailer", "upgrade", "proxy-connection", "proxy-authorization", "proxy-authenticate", "expect", "connection", "x-forwarded-for", "x-real-ip", "x-forwarded-port"},
			want: []string{"X-Forwarded-Proto: http", "X-Forwarded-Host: h"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := parseReq(t, tc.raw)
			var sc scratch
			rewriteRequest(&req.Header, &sc, []byte(tc.ip), []byte(tc.port), protoHTTP)
			if req.Header.ConnectionClose() {
				t.Error("Connection: close left on the forwarded request")
			}
			out := string(req.Header.Header())
			lines := strings.Split(out, "\r\n")
			for _, w := range tc.want {
				found := false
				for _, l := range lines {
					found = found || l == w
				}
				if !found {
					t.Errorf("missing %q in\n%s", w, out)
				}
			}
			for _, l := range lines[1:] {
				name, _, _ := strings.Cut(l, ":")
				for _, g := range tc.gone {
					if strings.ToLower(name) == g {
						t.Errorf("%q still present in\n%s", l, out)
					}
				}
			}
		})
	}
}

func TestCopyResponseHeader(t *testing.T) {
	t.Parallel()
	var src, dst fasthttp.ResponseHeader
	src.DisableNormalizing()
	dst.DisableNormalizing()
	raw := "HTTP/1.1 418 Teapot\r\nconnection: x-a, Keep-Alive\r\nx-a: 1\r\nX-B: 2\r\nkeep-alive: 3\r\nUpgrade: x\r\nContent-Length: 0\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n"
	if err := src.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	var sc scratch
	copyResponseHeader(&dst, &src, &sc)
	if dst.StatusCode() != 418 || string(dst.StatusMessage()) != "Teapot" {
		t.Errorf("status %d %q", dst.StatusCode(), dst.StatusMessage())
	}
	out := string(dst.Header())
	for _, g := range []string{"x-a:", "keep-alive:", "upgrade:", "connection:"} {
		if strings.Contains(strings.ToLower(out), g) {
			t.Errorf("%q present in\n%s", g, out)
		}
	}
	if !strings.Contains(out, "X-B: 2\r\n") {
		t.Errorf("X-B missing in\n%s", out)
	}
	if dst.ConnectionClose() {
		t.Error("connection close copied")
	}
}

// FuzzRewrite feeds arbitrary request and response headers through both
// rewrites: they must not panic, must leave no hop-by-hop or
// Connection-named header, and must keep one X-Forwarded-For.
func FuzzRewrite(f *testing.F) {
	f.Add(sampleReq, "HTTP/1.1 200 OK\r\nConnection: x\r\nx: 1\r\n\r\n")
	f.Add("GET / HTTP/1.1\r\nHost: a\r\nConnection: ,,, ,a,\r\na: b\r\nX-Forwarded-For: \r\n\r\n", "HTTP/1.1 204 No Content\r\n\r\n")
	f.Add("GET / HTTP/1.0\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n", "HTTP/1.1 200 OK\r\nTrailer: x\r\nTransfer-Encoding: chunked\r\n\r\n")
	f.Fuzz(func(t *testing.T, rawReq, rawResp string) {
		var req fasthttp.Request
		req.Header.DisableNormalizing()
		if err := req.Header.Read(bufio.NewReader(strings.NewReader(rawReq))); err == nil {
			var sc scratch
			rewriteRequest(&req.Header, &sc, []byte("127.0.0.1"), []byte("80"), protoHTTP)
			var xff int
			req.Header.VisitAll(func(k, v []byte) {
				switch classify(k) {
				case kindConnection, kindHop, kindExpect:
					t.Fatalf("hop-by-hop %q left in %q", k, req.Header.Header())
				case kindXFF:
					xff++
					if !strings.HasSuffix(string(v), "127.0.0.1") {
						t.Fatalf("X-Forwarded-For %q does not end with the client", v)
					}
				}
				if sc.ntok > 0 && sc.named(k) && classify(k) == kindOther {
					t.Fatalf("Connection-named %q left", k)
				}
			})
			if xff != 1 {
				t.Fatalf("%d X-Forwarded-For headers", xff)
			}
		}
		var src, dst fasthttp.ResponseHeader
		src.DisableNormalizing()
		dst.DisableNormalizing()
		if err := src.Read(bufio.NewReader(strings.NewReader(rawResp))); err == nil {
			var sc scratch
			copyResponseHeader(&dst, &src, &sc)
			dst.VisitAll(func(k, v []byte) {
				switch classify(k) {
				case kindConnection, kindHop:
					t.Fatalf("hop-by-hop %q copied", k)
				}
			})
		}
	})
}

func TestRewriteRequestUpgrade(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, headers string
		want          bool
		value         string
	}{
		{"websocket", "Connection: Upgrade\r\nUpgrade: websocket\r\n", true, "websocket"},
		{"token in a list, any case", "connection: keep-alive, UPGRADE\r\nupgrade: websocket\r\n", true, "websocket"},
		{"two Connection headers", "Connection: keep-alive\r\nConnection: upgrade\r\nUpgrade: h2c\r\n", true, "h2c"},
		{"two Upgrade headers", "Connection: upgrade\r\nUpgrade: foo/1\r\nUpgrade:  bar \r\n", true, "foo/1, bar"},
		{"no Connection token", "Connection: keep-alive\r\nUpgrade: websocket\r\n", false, ""},
		{"no Upgrade header", "Connection: upgrade\r\n", false, ""},
		{"empty Upgrade", "Connection: upgrade\r\nUpgrade: \r\n", false, ""},
		{"token is a prefix", "Connection: upgrades\r\nUpgrade: websocket\r\n", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := parseReq(t, "GET / HTTP/1.1\r\nHost: h\r\n"+tc.headers+"\r\n")
			var sc scratch
			got := rewriteRequest(&req.Header, &sc, nil, nil, protoHTTP)
			if got != tc.want || (got && string(sc.upgrade) != tc.value) {
				t.Errorf("upgrade %v %q, want %v %q", got, sc.upgrade, tc.want, tc.value)
			}
			// Removed either way: the tunnel puts them back.
			for _, k := range []string{"upgrade:", "connection:"} {
				if strings.Contains(strings.ToLower(string(req.Header.Header())), k) {
					t.Errorf("%s left:\n%s", k, req.Header.Header())
				}
			}
		})
	}
}
