package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clkTck is USER_HZ, the unit of utime and stime in /proc/<pid>/stat; 100
// on every Linux architecture Go supports.
const clkTck = 100

// statFields returns the fields of /proc/<pid>/stat after the command name
// (field 3, the state, is index 0).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// cpuTicks is utime+stime of pid (all its threads) in clock ticks.
func cpuTicks(pid int) (uint64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return u + s, nil
}

// sumTicks is the CPU time of pids in clock ticks; processes that are gone
// count nothing.
func sumTicks(pids []int) uint64 {
	var t uint64
	for _, p := range pids {
		if v, err := cpuTicks(p); err == nil {
			t += v
		}
	}
	return t
}

// hwmKB sums VmHWM (peak resident set) over pids, in KiB.
func hwmKB(pids []int) uint64 {
	var total uint64
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					v, _ := strconv.ParseUint(f[0], 10, 64)
					total += v
				}
			}
		}
	}
	return total
}

// resetHWM sets each process's peak RSS back to its current RSS
// (clear_refs value 5), so VmHWM afterwards is the peak of one run.
func resetHWM(pids []int) {
	for _, p := range pids {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p), []byte("5"), 0o200)
	}
}

// groupPIDs lists the processes whose process group is pgid.
func groupPIDs(pgid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(pid)
		if err != nil || len(f) < 3 {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pidByCmdline finds the one process whose command line contains arg (the
// gateway's config path, unique to this run: gatewayproc keeps the pid to
// itself).
func pidByCmdline(arg string) (int, error) {
	entries, _ := os.ReadDir("/proc")
	found := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for a := range bytes.SplitSeq(b, []byte{0}) {
			if string(a) == arg {
				if found != 0 {
					return 0, fmt.Errorf("two processes run with %s", arg)
				}
				found = pid
			}
		}
	}
	if found == 0 {
		return 0, fmt.Errorf("no process runs with %s", arg)
	}
	return found, nil
}
