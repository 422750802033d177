package proxy

// chunkScan follows the chunked framing of a response body (RFC 9112, 7.1)
// as its bytes pass through, so the event loops can forward a chunked body
// verbatim and know where it ends, without decoding and re-encoding it.
// The trailer section is not forwarded (trailers are dropped, as on the
// goroutine path): the caller ends the body with the final CRLF itself.
type chunkScan struct {
	state int
	size  int64
}

const (
	chSize        = iota // first hex digit of a chunk size
	chSizeDigits         // more hex digits of a chunk size
	chExt                // a chunk extension, up to CR
	chSizeLF             // LF ending the size line
	chData               // size bytes of data
	chDataCR             // CR after the data
	chDataLF             // LF after the data
	chTrailer            // start of a trailer line, or of the final CRLF
	chTrailerLine        // rest of a trailer line
	chEndLF              // LF of the final CRLF
)

// maxChunkSize bounds one chunk's size (a bigger one is malformed): 1 TiB
// keeps size arithmetic far from overflow.
const maxChunkSize = 1 << 40

// scan consumes p up to the end of the body. n bytes of p belong to the
// body; the first fwd of them are to be forwarded (the rest belong to the
// trailer section); done is set when the body ended with p[n-1]; bad on
// malformed framing (n is then just past the offending byte, and fwd
// stops before it).
func (s *chunkScan) scan(p []byte) (n, fwd int, done, bad bool) {
	fwd = -1
	if s.state >= chTrailer {
		fwd = 0 // the trailer section began in an earlier call
	}
	for n < len(p) {
		if s.state == chData {
			k := int(min(int64(len(p)-n), s.size))
			n += k
			if s.size -= int64(k); s.size == 0 {
				s.state = chDataCR
			}
			continue
		}
		ch := p[n]
		n++
		switch s.state {
		case chSize, chSizeDigits:
			switch {
			case '0' <= ch && ch <= '9', 'a' <= ch|0x20 && ch|0x20 <= 'f':
				d := int64(ch - '0')
				if ch > '9' {
					d = int64(ch|0x20-'a') + 10
				}
				if s.size = s.size*16 + d; s.size > maxChunkSize {
					return n, fwdOf(fwd, n-1), false, true
				}
				s.state = chSizeDigits
			case s.state == chSize:
				// chunk-size is 1*HEXDIG: no digit is not a last chunk.
				return n, fwdOf(fwd, n-1), false, true
			case ch == ';' || ch == ' ' || ch == '\t':
				s.state = chExt
			case ch == '\r':
				s.state = chSizeLF
			default:
				return n, fwdOf(fwd, n-1), false, true
			}
		case chExt:
			switch ch {
			case '\r':
				s.state = chSizeLF
			case '\n':
				// A bare LF does not end the line, and forwarded it would
				// end it early for a client that takes it for one.
				return n, fwdOf(fwd, n-1), false, true
			}
		case chSizeLF:
			if ch != '\n' {
				return n, fwdOf(fwd, n-1), false, true
			}
			if s.state = chData; s.size == 0 {
				// The last chunk: what follows is the trailer section.
				s.state = chTrailer
				fwd = n
			}
		case chDataCR, chDataLF:
			if ch != "\r\n"[s.state-chDataCR] {
				return n, fwdOf(fwd, n-1), false, true
			}
			if s.state++; s.state > chDataLF {
				s.state = chSize
			}
		case chTrailer:
			s.state = chTrailerLine
			if ch == '\r' {
				s.state = chEndLF
			}
		case chTrailerLine:
			if ch == '\n' {
				s.state = chTrailer
			}
		case chEndLF:
			if ch != '\n' {
				return n, fwdOf(fwd, n-1), false, true
			}
			return n, fwdOf(fwd, n), true, false
		}
	}
	return n, fwdOf(fwd, n), false, false
}

// fwdOf is scan's forwardable count: everything consumed, unless the
// trailer section started in this call (at fwd) or before it (fwd 0).
func fwdOf(fwd, n int) int {
	if fwd >= 0 {
		return fwd
	}
	return n
}
