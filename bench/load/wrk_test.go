package main

import (
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	t.Parallel()
	const out = `Running 5s test @ http://127.0.0.1:8080/small
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21ms  503.00us  14.21ms   80.12%
    Req/Sec    26.51k     1.79k   30.01k    70.00%
  Latency Distribution
     50%    1.13ms
     75%    1.40ms
     90%    1.76ms
     99%    2.90ms
  263811 requests in 5.00s, 40.26MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  52756.32
Transfer/sec:      8.05MB
`
	got, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 263811, RPS: 52756.32, P50: 1130 * time.Microsecond, P99: 2900 * time.Microsecond, Non2xx: 7, SockErrs: 6,
		SockLine: "connect 0, read 3, write 1, timeout 2"}
	if got != want {
		t.Errorf("parseWrk = %+v, want %+v", got, want)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Error("parseWrk accepted output without results")
	}
}

func TestParseWrkDuration(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"812.00us", 812 * time.Microsecond},
		{"1.50ms", 1500 * time.Microsecond},
		{"2.00s", 2 * time.Second},
		{"1.00m", time.Minute},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := parseWrkDuration(tc.in)
			if err != nil || got != tc.want {
				t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median odd = %v", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2 {
		t.Errorf("median even = %v, want the lower middle 2", got)
	}
}
