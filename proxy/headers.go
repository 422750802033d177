package proxy

import (
	"bytes"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// Header rewriting. Both servers run with header-name normalisation off, so
// names arrive in whatever case the peer used and fasthttp's Peek/Del are
// case-sensitive for them: every lookup here folds case itself, and
// deletions use the exact spelling found on the wire. Nothing here
// allocates once the scratch buffers have grown to fit.

// scratch holds per-request buffers reused through the exchange pool.
type scratch struct {
	tokens []byte // Connection header tokens, '\n'-terminated
	ntok   int
	dels   []byte // header names to delete, '\n'-terminated
	xff    []byte // incoming X-Forwarded-For values, joined
	// upgrade holds a request's Upgrade values, joined, when
	// rewriteRequest found an upgrade request.
	upgrade []byte
}

func (sc *scratch) reset() {
	sc.tokens, sc.ntok, sc.dels, sc.xff = sc.tokens[:0], 0, sc.dels[:0], sc.xff[:0]
	sc.upgrade = sc.upgrade[:0]
}

// maxConnTokens caps the Connection tokens honoured per message, so a
// hostile header cannot make stripping quadratic. Tokens beyond it are
// ignored (the named headers pass through).
const maxConnTokens = 32

// kind classifies a header name.
type kind uint8

const (
	kindOther      kind = iota
	kindConnection      // hop-by-hop, and its value names more
	kindHop             // hop-by-hop: always removed
	kindFraming         // Transfer-Encoding: fasthttp re-frames, never touched
	kindProtected       // Host, Content-Length: never removed via Connection
	kindXFF             // X-Forwarded-For: appended to
	kindForwarded       // other X-Forwarded-*, X-Real-IP: replaced
	kindExpect          // Expect: answered by the front server already
)

func classify(k []byte) kind {
	switch len(k) {
	case 2:
		if equalFold(k, "TE") {
			return kindHop
		}
	case 4:
		if equalFold(k, "Host") {
			return kindProtected
		}
	case 6:
		if equalFold(k, "Expect") {
			return kindExpect
		}
	case 7:
		if equalFold(k, "Trailer") || equalFold(k, "Upgrade") {
			return kindHop
		}
	case 9:
		if equalFold(k, "X-Real-IP") {
			return kindForwarded
		}
	case 10:
		if equalFold(k, "Connection") {
			return kindConnection
		}
		if equalFold(k, "Keep-Alive") {
			return kindHop
		}
	case 14:
		if equalFold(k, "Content-Length") {
			return kindProtected
		}
	case 15:
		if equalFold(k, "X-Forwarded-For") {
			return kindXFF
		}
	case 16:
		if equalFold(k, "Proxy-Connection") || equalFold(k, "X-Forwarded-Host") || equalFold(k, "X-Forwarded-Port") {
			if k[0]|0x20 == 'p' {
				return kindHop
			}
			return kindForwarded
		}
	case 17:
		if equalFold(k, "Transfer-Encoding") {
			return kindFraming
		}
		if equalFold(k, "X-Forwarded-Proto") {
			return kindForwarded
		}
	case 18:
		if equalFold(k, "Proxy-Authenticate") {
			return kindHop
		}
	case 19:
		if equalFold(k, "Proxy-Authorization") {
			return kindHop
		}
	}
	return kindOther
}

// equalFold reports whether b equals the ASCII string s ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func equalFoldBytes(a, b []byte) bool { return equalFold(a, b2s(b)) }

// b2s views b as a string without copying; the string must not outlive b.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// addTokens appends the comma-separated tokens of a Connection value.
func (sc *scratch) addTokens(v []byte) {
	for len(v) > 0 && sc.ntok < maxConnTokens {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		t := trimOWS(v[:i])
		if len(t) > 0 {
			sc.tokens = append(append(sc.tokens, t...), '\n')
			sc.ntok++
		}
		if i == len(v) {
			break
		}
		v = v[i+1:]
	}
}

// named reports whether a Connection token names k.
func (sc *scratch) named(k []byte) bool {
	t := sc.tokens
	for len(t) > 0 {
		i := 0
		for t[i] != '\n' {
			i++
		}
		if equalFoldBytes(k, t[:i]) {
			return true
		}
		t = t[i+1:]
	}
	return false
}

func (sc *scratch) addDel(k []byte) { sc.dels = append(append(sc.dels, k...), '\n') }

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// Canonical names fasthttp keeps outside its header list; deleting them
// needs the canonical spelling as well as the wire one.
var specialRequest = [...]string{"Content-Type", "User-Agent", "Cookie", "Connection", "Trailer"}

var (
	hdrXFF       = []byte("X-Forwarded-For")
	hdrXFProto   = []byte("X-Forwarded-Proto")
	hdrXFHost    = []byte("X-Forwarded-Host")
	hdrXFPort    = []byte("X-Forwarded-Port")
	hdrXRealIP   = []byte("X-Real-IP")
	protoHTTP    = []byte("http")
	protoHTTPS   = []byte("https")
	tokUpgrade   = []byte("upgrade")
	commaSpace   = []byte(", ")
	canonTrailer = "Trailer"
	protoHTTP10  = []byte("HTTP/1.0")
	protoHTTP11  = []byte("HTTP/1.1")
	canonUpgrade = "Upgrade"
)

// hostByte marks the bytes a Host header may hold (RFC 3986 reg-name,
// IPv4 and IP-literal, and the port): unreserved, sub-delims, '%' of
// pct-encoding, ':' and the brackets. Not '@' (userinfo), '/', '?', '#',
// backslash, space or controls.
var hostByte = func() (t [256]bool) {
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%:[]") {
		t[c] = true
	}
	return t
}()

// hasRawContentLength reports whether a raw request header block holds a
// Content-Length field.
func hasRawContentLength(raw []byte) bool { return hasRawField(raw, "content-length:") }

// hasRawTransferEncoding reports whether a raw request header block holds
// a Transfer-Encoding field (whatever its value).
func hasRawTransferEncoding(raw []byte) bool { return hasRawField(raw, "transfer-encoding:") }

// hasRawField reports whether a raw header block has a line starting with
// name (lower case, with its colon), in any case.
func hasRawField(raw []byte, name string) bool {
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if len(line) >= len(name) && equalFold(line[:len(name)], name) {
			return true
		}
	}
	return false
}

// validHost reports whether a Host header value (possibly empty, as
// HTTP/1.0 allows) holds only bytes a host and port can be made of.
func validHost(h []byte) bool {
	for _, c := range h {
		if !hostByte[c] {
			return false
		}
	}
	return true
}

// rewriteRequest prepares a received request header for the endpoint: it
// removes the hop-by-hop headers (the fixed list, Expect, which the front
// server already answered, and every header a Connection token names,
// except Host and Content-Length), drops client-supplied X-Forwarded-Host,
// -Proto, -Port and X-Real-IP, and sets them from the connection, appending
// the client IP to any X-Forwarded-For chain (all spellings joined into one
// header). The Host header is left as it is. ip and port may be empty (the
// headers that need them are then not set); proto is the scheme of the
// listener that accepted the connection ("http" or "https"). h must hold a parsed request
// (its raw header block is what is scanned).
//
// It reports whether the request asked for a protocol upgrade: a
// Connection token "upgrade" and an Upgrade header, whose values are then
// left, joined, in sc.upgrade. Both headers are removed all the same; the
// caller puts them back if it tunnels the connection (see upgrade.go).
func rewriteRequest(h *fasthttp.RequestHeader, sc *scratch, ip, port, proto []byte) (upgrade bool) {
	sc.reset()
	for k, v := range h.AllInOrder() {
		switch classify(k) {
		case kindConnection:
			sc.addTokens(v)
			sc.addDel(k)
		case kindHop:
			if len(k) == len(canonUpgrade) && equalFold(k, canonUpgrade) {
				if v = trimOWS(v); len(v) > 0 {
					if len(sc.upgrade) > 0 {
						sc.upgrade = append(sc.upgrade, commaSpace...)
					}
					sc.upgrade = append(sc.upgrade, v...)
				}
			}
			sc.addDel(k)
		case kindExpect, kindForwarded:
			sc.addDel(k)
		case kindXFF:
			if v = trimOWS(v); len(v) > 0 {
				if len(sc.xff) > 0 {
					sc.xff = append(sc.xff, commaSpace...)
				}
				sc.xff = append(sc.xff, v...)
			}
			sc.addDel(k)
		}
	}
	upgrade = len(sc.upgrade) > 0 && sc.named(tokUpgrade)
	if sc.ntok > 0 {
		for k := range h.AllInOrder() {
			if classify(k) == kindOther && sc.named(k) {
				sc.addDel(k)
			}
		}
	}
	deleteNames(h, sc.dels)
	h.Del(canonTrailer)
	h.ResetConnectionClose()

	xff := sc.xff
	if len(ip) > 0 {
		if len(xff) > 0 {
			xff = append(xff, commaSpace...)
		}
		xff = append(xff, ip...)
		h.SetCanonical(hdrXRealIP, ip)
	}
	sc.xff = xff
	if len(xff) > 0 {
		h.SetCanonical(hdrXFF, xff)
	}
	h.SetCanonical(hdrXFProto, proto)
	if host := h.Host(); len(host) > 0 {
		h.SetCanonical(hdrXFHost, host)
	}
	if len(port) > 0 {
		h.SetCanonical(hdrXFPort, port)
	}
	return upgrade
}

func deleteNames(h *fasthttp.RequestHeader, names []byte) {
	for len(names) > 0 {
		i := 0
		for names[i] != '\n' {
			i++
		}
		k := names[:i]
		for _, s := range specialRequest {
			if equalFold(k, s) {
				h.Del(s)
				break
			}
		}
		h.DelBytes(k)
		names = names[i+1:]
	}
}

// copyResponseHeader copies an endpoint's response header to the client
// response: status, and every header except the hop-by-hop ones (the fixed
// list and whatever a Connection token names, except Content-Length).
// Connection: close from the endpoint concerns the endpoint connection only.
// Date is replaced by the front server's own (fasthttp manages Date, as
// nginx does). src's Trailer declaration is dropped.
func copyResponseHeader(dst, src *fasthttp.ResponseHeader, sc *scratch) {
	sc.reset()
	src.SetNoDefaultContentType(true) // report only what the endpoint sent
	src.Del(canonTrailer)
	for k, v := range src.All() {
		if classify(k) == kindConnection {
			sc.addTokens(v)
		}
	}
	dst.SetStatusCode(src.StatusCode())
	if m := src.StatusMessage(); len(m) > 0 {
		dst.SetStatusMessage(m)
	}
	for k, v := range src.All() {
		switch classify(k) {
		case kindConnection, kindHop, kindFraming:
			continue
		case kindOther, kindXFF, kindForwarded, kindExpect:
			if sc.ntok > 0 && sc.named(k) {
				continue
			}
		}
		dst.AddBytesKV(k, v)
	}
}
