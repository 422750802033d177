package proxy

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/route"
)

// patternReader yields n deterministic pseudo-random bytes.
type patternReader struct {
	rng *rand.ChaCha8
	n   int64
}

func newPattern(seed byte, n int64) *patternReader {
	var s [32]byte
	s[0] = seed
	return &patternReader{rng: rand.NewChaCha8(s), n: n}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	p.rng.Read(b)
	p.n -= int64(len(b))
	return len(b), nil
}

func sum(h hash.Hash) string { return fmt.Sprintf("%x", h.Sum(nil)) }

// TestStreamingBoundedMemory pushes a large body through the proxy in each
// direction while sampling the heap: nothing may buffer a whole body.
func TestStreamingBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams hundreds of MiB")
	}
	size := int64(512 << 20)
	if raceEnabled {
		size = 64 << 20
	}
	const limit = 64 << 20

	h := newHarness(t, nil)
	up := backend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPut:
			d := sha256.New()
			n, err := io.Copy(d, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%d %s", n, sum(d))
		default:
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			io.Copy(w, newPattern(2, size))
		}
	})
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("up", up))

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	c := h.client()

	// Upload, sized.
	want := sha256.New()
	io.Copy(want, newPattern(1, size))
	req, _ := http.NewRequest(http.MethodPut, "http://x/up", newPattern(1, size))
	req.ContentLength = size
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := fmt.Sprintf("%d %s", size, sum(want)); string(b) != got {
		t.Errorf("upload: backend saw %q, want %q", b, got)
	}

	// Upload, chunked.
	req, _ = http.NewRequest(http.MethodPut, "http://x/up", io.MultiReader(newPattern(1, size)))
	req.ContentLength = -1
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := fmt.Sprintf("%d %s", size, sum(want)); string(b) != got {
		t.Errorf("chunked upload: backend saw %q, want %q", b, got)
	}

	// Download.
	resp, err = c.Get("http://x/down")
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.New()
	n, err := io.Copy(d, resp.Body)
	resp.Body.Close()
	want = sha256.New()
	io.Copy(want, newPattern(2, size))
	if err != nil || n != size || sum(d) != sum(want) {
		t.Errorf("download: %d bytes, err %v, checksum match %v", n, err, sum(d) == sum(want))
	}

	close(stop)
	<-sampled
	t.Logf("%d MiB each way, peak HeapInuse %.1f MiB", size>>20, float64(peak.Load())/(1<<20))
	if p := peak.Load(); p > limit {
		t.Errorf("peak HeapInuse %d MiB > %d MiB: a body was buffered", p>>20, limit>>20)
	}
}
