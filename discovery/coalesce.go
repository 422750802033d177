package discovery

import (
	"context"
	"time"
)

// coalesce calls fire for bursts of signals on in: after the first signal it
// waits until idle passes without another one, or max passes since the
// first, whichever comes first, then calls fire once for the whole burst
// (serf's coalesce loop, quiescent period plus quantum). Signals sent while
// fire runs start the next burst. It returns when ctx is done.
//
// in should be buffered with capacity 1 and written without blocking
// (select with default), so that any number of signals between two reads
// collapse into one.
func coalesce(ctx context.Context, in <-chan struct{}, idle, max time.Duration, fire func()) {
	idleT := time.NewTimer(time.Hour)
	maxT := time.NewTimer(time.Hour)
	idleT.Stop()
	maxT.Stop()
	defer idleT.Stop()
	defer maxT.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-in:
		}
		idleT.Reset(idle)
		maxT.Reset(max)
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-in:
				idleT.Reset(idle)
			case <-idleT.C:
				break wait
			case <-maxT.C:
				break wait
			}
		}
		// Since Go 1.23 Stop and Reset also discard a pending tick, so no
		// stale expiry leaks into the next burst.
		idleT.Stop()
		maxT.Stop()
		fire()
	}
}
