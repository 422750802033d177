package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"strings"
	"testing"
)

// chunkScan as the event loops use it: fed a chunked response body in
// whatever pieces the reads deliver, it must find the end of the body
// exactly (the bytes after it are the next response), forward the body
// verbatim up to the last chunk (the caller adds the final CRLF, dropping
// the trailers), and refuse malformed framing rather than guess.

var chunkCases = []struct {
	name string
	in   string
	n    int    // bytes of in that belong to the body
	out  string // forwarded bytes, plus the caller's "\r\n" when done
	done bool
	bad  bool
}{
	// Well-formed bodies; n is len(in) unless bytes follow the end.
	{name: "single chunk", in: "5\r\nhello\r\n0\r\n\r\n", out: "5\r\nhello\r\n0\r\n\r\n", done: true},
	{name: "several chunks", in: "3\r\nabc\r\n1\r\nd\r\n2\r\nef\r\n0\r\n\r\n", out: "3\r\nabc\r\n1\r\nd\r\n2\r\nef\r\n0\r\n\r\n", done: true},
	{name: "last chunk only", in: "0\r\n\r\n", out: "0\r\n\r\n", done: true},
	{
		name: "chunk extensions",
		in:   "5;ext=1\r\nhello\r\n3;a=\"q;x\";b\r\nabc\r\n0;last\r\n\r\n",
		out:  "5;ext=1\r\nhello\r\n3;a=\"q;x\";b\r\nabc\r\n0;last\r\n\r\n", done: true,
	},
	{
		// BWS before ";" (RFC 9112, 7.1.1), and trailing whitespace.
		name: "whitespace after the size",
		in:   "5 ;a\r\nhello\r\n2\t\r\nab\r\n0 \t; x = 1\r\n\r\n",
		out:  "5 ;a\r\nhello\r\n2\t\r\nab\r\n0 \t; x = 1\r\n\r\n", done: true,
	},
	{
		name: "upper and lower hex",
		in:   "a\r\n" + strings.Repeat("x", 10) + "\r\nB\r\n" + strings.Repeat("y", 11) + "\r\n1f\r\n" + strings.Repeat("z", 31) + "\r\n1F\r\n" + strings.Repeat("w", 31) + "\r\n0\r\n\r\n",
		out:  "a\r\n" + strings.Repeat("x", 10) + "\r\nB\r\n" + strings.Repeat("y", 11) + "\r\n1f\r\n" + strings.Repeat("z", 31) + "\r\n1F\r\n" + strings.Repeat("w", 31) + "\r\n0\r\n\r\n", done: true,
	},
	{name: "leading zeros", in: "005\r\nhello\r\n000\r\n\r\n", out: "005\r\nhello\r\n000\r\n\r\n", done: true},
	{name: "data holding CRLF and digits", in: "7\r\n\r\n0\r\n\r\n\r\n0\r\n\r\n", out: "7\r\n\r\n0\r\n\r\n\r\n0\r\n\r\n", done: true},
	{name: "one trailer field", in: "5\r\nhello\r\n0\r\nExpires: never\r\n\r\n", out: "5\r\nhello\r\n0\r\n\r\n", done: true},
	{
		name: "several trailer fields",
		in:   "5\r\nhello\r\n0;e\r\nA: 1\r\nB-Long: x y z\r\nC:\r\n\r\n",
		out:  "5\r\nhello\r\n0;e\r\n\r\n", done: true,
	},
	{name: "bytes after the end", in: "5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", n: 15, out: "5\r\nhello\r\n0\r\n\r\n", done: true},
	{name: "bytes after the trailers", in: "0\r\nA: 1\r\n\r\n0\r\n\r\n", n: 11, out: "0\r\n\r\n", done: true},
	{name: "exactly 1 TiB", in: "10000000000\r\nabc", out: "10000000000\r\nabc"},

	// Cut short: everything is consumed, nothing ends.
	{name: "incomplete size line", in: "5;a", out: "5;a"},
	{name: "incomplete data", in: "5\r\nhel", out: "5\r\nhel"},
	{name: "incomplete trailers", in: "5\r\nhello\r\n0\r\nA: 1\r\n", out: "5\r\nhello\r\n0\r\n"},
	{name: "final CR without LF yet", in: "0\r\n\r", out: "0\r\n"},

	// Malformed: n is just past the byte that gives it away.
	{name: "non-hex size", in: "5\r\nhello\r\nx\r\n", n: 11, bad: true},
	{name: "hex size then garbage", in: "5g\r\nhello\r\n0\r\n\r\n", n: 2, bad: true},
	{name: "missing CRLF after data", in: "5\r\nhelloX\r\n0\r\n\r\n", n: 9, bad: true},
	{name: "missing LF after data", in: "5\r\nhello\rX\n0\r\n\r\n", n: 10, bad: true},
	{name: "LF without CR after size", in: "5\nhello\r\n0\r\n\r\n", n: 2, bad: true},
	{name: "CR without LF after size", in: "5\rhello\r\n0\r\n\r\n", n: 3, bad: true},
	{name: "size above 1 TiB", in: "10000000001\r\n", n: 11, bad: true},
	{name: "size overflowing 64 bits", in: "ffffffffffffffffffff1\r\n", n: 11, bad: true},
	{name: "final CR without LF", in: "0\r\n\rX", n: 5, bad: true},
	{name: "trailer then CR without LF", in: "0\r\nA: 1\r\n\r\r\n", n: 11, bad: true},
	// chunk-size is 1*HEXDIG: a size line without digits is not a last chunk.
	{name: "empty size line", in: "\r\n\r\n", n: 1, bad: true},
	{name: "empty size line after a chunk", in: "5\r\nhello\r\n\r\n\r\n", n: 11, bad: true},
	{name: "whitespace before the size", in: " 5\r\nhello\r\n0\r\n\r\n", n: 1, bad: true},
	{name: "extension without a size", in: ";x\r\n\r\n", n: 1, bad: true},
	// A line ends at CRLF only (RFC 9112, 7.1 and erratum 7633): a bare LF
	// in an extension, forwarded verbatim, would end the line early for a
	// client that accepts one, and then the two disagree on the framing.
	{name: "LF without CR in an extension", in: "5;a\nb\r\nhello\r\n0\r\n\r\n", n: 4, bad: true},
}

// scanPieces feeds pieces to one chunkScan in turn, as the event loop does
// with successive reads, until the body ends or turns out malformed. n is
// the number of bytes consumed in all; out is what is forwarded, with the
// final CRLF the caller adds when done. It fails t if one call breaks
// scan's contract.
func scanPieces(t *testing.T, pieces ...[]byte) (n int, out []byte, done, bad bool) {
	t.Helper()
	inTrailer := false
	var s chunkScan
	for i, p := range pieces {
		k, fwd, d, b := s.scan(p)
		switch {
		case fwd < 0 || fwd > k || k > len(p):
			t.Fatalf("piece %d (%d bytes): n=%d fwd=%d, want 0 <= fwd <= n <= %d", i, len(p), k, fwd, len(p))
		case d && b:
			t.Fatalf("piece %d: both done and bad", i)
		case !d && !b && k != len(p):
			t.Fatalf("piece %d: consumed %d of %d bytes without the body ending", i, k, len(p))
		case inTrailer && fwd != 0:
			t.Fatalf("piece %d: %d trailer bytes forwarded", i, fwd)
		}
		n += k
		out = append(out, p[:fwd]...)
		if d || b {
			if d {
				out = append(out, "\r\n"...)
			}
			return n, out, d, b
		}
		inTrailer = inTrailer || fwd < k
	}
	return n, out, false, false
}

func TestChunkScan(t *testing.T) {
	t.Parallel()
	for _, tc := range chunkCases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.n
			if want == 0 {
				want = len(tc.in)
			}
			n, out, done, bad := scanPieces(t, []byte(tc.in))
			if n != want || done != tc.done || bad != tc.bad {
				t.Errorf("n=%d done=%v bad=%v, want n=%d done=%v bad=%v", n, done, bad, want, tc.done, tc.bad)
			}
			if !tc.bad && string(out) != tc.out {
				t.Errorf("forwarded %q, want %q", out, tc.out)
			}
		})
	}
}

// However the reads split the body, the scan ends at the same byte and
// forwards the same bytes as when it has the body in one piece.
func TestChunkScanSplit(t *testing.T) {
	t.Parallel()
	for _, tc := range chunkCases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			n, out, done, bad := scanPieces(t, in)
			check := func(split string, pieces ...[]byte) {
				t.Helper()
				n2, out2, done2, bad2 := scanPieces(t, pieces...)
				if n2 != n || done2 != done || bad2 != bad || !bytes.Equal(out2, out) {
					t.Fatalf("split at %s: n=%d done=%v bad=%v forwarded %q; in one piece: n=%d done=%v bad=%v forwarded %q",
						split, n2, done2, bad2, out2, n, done, bad, out)
				}
			}
			for i := 0; i <= len(in); i++ {
				check(fmt.Sprint(i), in[:i], in[i:])
				for j := i; j <= len(in); j++ {
					check(fmt.Sprint(i, ",", j), in[:i], in[i:j], in[j:])
				}
			}
			var bytewise [][]byte
			for i := range in {
				bytewise = append(bytewise, in[i:i+1])
			}
			check("every byte", bytewise...)
		})
	}
}

// FuzzChunkScan feeds arbitrary bytes to chunkScan in pieces whose sizes
// split drives, and holds it to net/http's chunked decoder: when the scan
// ends a body, what it forwarded plus the final CRLF is one complete chunked
// body with the same content as what it consumed; and when net/http reads
// the input as a complete response body ending at byte k, the scan ends
// there too.
func FuzzChunkScan(f *testing.F) {
	for _, tc := range chunkCases {
		for _, split := range []uint8{0, 1, 3, 200} {
			f.Add([]byte(tc.in), split)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		n, out, done, bad := scanPieces(t, pieces(in, split)...)
		if done {
			body, at, err := goChunked(in[:n])
			if err != nil && goStricter(in[:n], at, err) {
				return
			}
			if err != nil {
				t.Fatalf("scan ended the body at %d, net/http rejects it at %d: %v", n, at, err)
			}
			fwd := len(out) - 2
			if at != fwd {
				t.Fatalf("last chunk ends at %d for net/http, forwarding stops at %d", at, fwd)
			}
			got, at, err := goChunked(out)
			if err != nil || !bytes.Equal(got, body) || at != fwd {
				t.Fatalf("forwarded %q decodes to %q (ending at %d, %v), want %q", out, got, at, err, body)
			}
			if end, err := goResponseEnd(out); err != nil || end != len(out) {
				t.Fatalf("forwarded %q: net/http ends the response body at %d (%v), want %d", out, end, err, len(out))
			}
		}
		end, err := goResponseEnd(in)
		if err != nil {
			return
		}
		if _, last, _ := goChunked(in); hasBareLF(in[last:end]) {
			// net/http reads the trailer section with textproto, which takes
			// a bare LF for a line end (RFC 9112, 2.2 allows it); the scan
			// takes one at the end of a trailer field but not for the empty
			// line ending the section. Trailers are dropped either way.
			return
		}
		if !done || bad || n != end {
			t.Fatalf("net/http reads a body ending at %d; scan: n=%d done=%v bad=%v", end, n, done, bad)
		}
	})
}

// pieces cuts in as successive reads might: in one piece for split 0, else
// in pieces of 1 to split%32+1 bytes drawn from a generator seeded by split.
func pieces(in []byte, split uint8) [][]byte {
	if split == 0 {
		return [][]byte{in}
	}
	r := rand.New(rand.NewPCG(uint64(split), 0))
	var ps [][]byte
	for len(in) > 0 {
		k := min(len(in), 1+r.IntN(int(split%32)+1))
		ps, in = append(ps, in[:k]), in[k:]
	}
	return ps
}

// goChunked decodes in with net/http's chunked reader, which stops after
// the last chunk's line, before the trailer section: at is where that line
// ends, or where the reader stopped on error.
func goChunked(in []byte) (body []byte, at int, err error) {
	r := bytes.NewReader(in)
	br := bufio.NewReader(r)
	body, err = io.ReadAll(httputil.NewChunkedReader(br))
	return body, len(in) - r.Len() - br.Buffered(), err
}

// goResponseEnd is where net/http's client ends a chunked response body
// that in starts with, past the trailer section.
func goResponseEnd(in []byte) (int, error) {
	const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	all := append([]byte(head), in...)
	r := bytes.NewReader(all)
	br := bufio.NewReader(r)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	return len(all) - r.Len() - br.Buffered() - len(head), nil
}

// goStricter reports whether err, net/http's chunked reader stopping at at,
// is one of the known places where it rejects framing the scan accepts:
//   - a line of 4 KiB or more, or chunk lines that are too long for the
//     data they carry (net/http's limits against abuse; the scan keeps no
//     line, so it needs no such limit);
//   - a size of more than 16 hex digits (leading zeros: the scan bounds the
//     value, at 1 TiB, not the digits);
//   - whitespace after the size: the scan reads it as BWS before a chunk
//     extension (RFC 9112, 7.1.1), net/http only trims trailing whitespace
//     and so rejects "5 ;x" (valid) as well as "5 x" (not valid, but read as
//     size 5 by whoever does not reject it, so no framing disagreement).
func goStricter(in []byte, at int, err error) bool {
	switch err.Error() {
	case httputil.ErrLineTooLong.Error(), "chunked encoding contains too much non-data":
		return true
	case "invalid byte in chunk length", "http chunk length too large":
		// The size line was read whole: it ends with CRLF at at, and what
		// precedes it is the input's start or the CRLF after chunk data.
		line := in[bytes.LastIndexByte(in[:at-1], '\n')+1 : at-2]
		size := bytes.TrimLeft(line, "0123456789abcdefABCDEF")
		digits := len(line) - len(size)
		return digits > 16 || digits > 0 && len(size) > 0 && (size[0] == ' ' || size[0] == '\t')
	}
	return false
}

// hasBareLF reports whether b has an LF not preceded by CR.
func hasBareLF(b []byte) bool {
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			return true
		}
	}
	return false
}
