package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"slices"
	"time"
)

// target is one thing wrk loads.
type target struct {
	name string
	addr string
	pids func() []int // the proxy's processes; nil for direct
}

// run is one wrk run against one target.
type runStat struct {
	target string
	wrk    wrkResult
	cpuSec float64 // proxy CPU seconds during the run; -1 for direct
	hwmKB  uint64  // peak RSS during the run
}

// verify checks that every target answers the profile's path with 200 and
// the full body, on the host(s) the profile uses.
func verify(ctx context.Context, targets []*target, p profile) error {
	c := &http.Client{Timeout: 2 * time.Second}
	hosts := []string{benchHost}
	if p.manyHosts {
		hosts = []string{extraHost(0), extraHost(extraN / 2), extraHost(extraN - 1)}
	}
	for _, t := range targets {
		for _, h := range hosts {
			code, n, err := get(ctx, c, t.addr, h, p.path)
			if err != nil || code != http.StatusOK || n != p.bodyLen {
				return fmt.Errorf("%s: GET %s%s (Host %s): %d, %d bytes, %v; want 200, %d bytes", t.name, t.addr, p.path, h, code, n, err, p.bodyLen)
			}
		}
	}
	return nil
}

// measure runs wrk round-robin over the targets for o.rounds rounds; each
// round starts one target later, so no target always runs first.
func measure(ctx context.Context, o options, p profile, targets []*target, script string, pods []*pod) ([]runStat, error) {
	if !p.manyHosts {
		script = ""
	}
	log.Printf("profile %q: warm-up %s per target, then %d round(s) of %s per target", p.name, o.warmup, o.rounds, o.duration)
	if o.warmup > 0 {
		for _, t := range targets {
			if _, err := runWrk(ctx, o.threads, p.conns, max(o.warmup, time.Second), t.addr, benchHost, p.path, script); err != nil {
				return nil, err
			}
		}
	}
	before := []int64{pods[0].requests.Load(), pods[1].requests.Load()}
	var runs []runStat
	for r := range o.rounds {
		for i := range targets {
			t := targets[(i+r)%len(targets)]
			var pids []int
			var t0 uint64
			if t.pids != nil {
				pids = t.pids()
				resetHWM(pids)
				t0 = sumTicks(pids)
			}
			w, err := runWrk(ctx, o.threads, p.conns, o.duration, t.addr, benchHost, p.path, script)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t.name, err)
			}
			s := runStat{target: t.name, wrk: w, cpuSec: -1}
			if t.pids != nil {
				s.cpuSec = float64(sumTicks(pids)-t0) / clkTck
				s.hwmKB = hwmKB(pids)
			}
			runs = append(runs, s)
			msg := fmt.Sprintf("  round %d/%d %-8s %9.0f req/s  p50 %-9s p99 %-9s", r+1, o.rounds, t.name, w.RPS, fmtDur(w.P50), fmtDur(w.P99))
			if s.cpuSec >= 0 {
				msg += fmt.Sprintf("  cpu %.2f s/100k  rss %s", cpuPer100k(s), fmtKB(s.hwmKB))
			}
			if w.Non2xx+w.SockErrs > 0 {
				msg += fmt.Sprintf("  ERRORS non-2xx %d, socket errors: %s", w.Non2xx, w.SockLine)
			}
			log.Print(msg)
		}
	}
	a, b := pods[0].requests.Load()-before[0], pods[1].requests.Load()-before[1]
	log.Printf("  pod request split: %d / %d (direct goes to the first pod only)", a, b)
	return runs, nil
}

func cpuPer100k(s runStat) float64 {
	if s.wrk.Requests == 0 {
		return 0
	}
	return s.cpuSec / float64(s.wrk.Requests) * 1e5
}

// result is one row: a target's medians over the rounds of one profile.
type result struct {
	profile    string
	target     string
	rps        float64
	p50, p99   time.Duration
	cpuPer100k float64 // -1 for direct
	hwmKB      uint64  // max over rounds
	errors     int64   // non-2xx plus socket errors, summed over rounds
	rounds     int
}

func summarize(p profile, targets []*target, runs []runStat) []result {
	var out []result
	for _, t := range targets {
		var rps, cpu []float64
		var p50, p99 []time.Duration
		res := result{profile: p.name, target: t.name, cpuPer100k: -1}
		for _, r := range runs {
			if r.target != t.name {
				continue
			}
			res.rounds++
			rps = append(rps, r.wrk.RPS)
			p50 = append(p50, r.wrk.P50)
			p99 = append(p99, r.wrk.P99)
			if r.cpuSec >= 0 {
				cpu = append(cpu, cpuPer100k(r))
			}
			res.hwmKB = max(res.hwmKB, r.hwmKB)
			res.errors += r.wrk.Non2xx + r.wrk.SockErrs
		}
		res.rps, res.p50, res.p99 = median(rps), median(p50), median(p99)
		if len(cpu) > 0 {
			res.cpuPer100k = median(cpu)
		}
		out = append(out, res)
	}
	return out
}

// median of an odd count is the middle value; of an even count the lower
// middle one (no averaging of latencies).
func median[T float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
