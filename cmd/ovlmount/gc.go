package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// The daemon holds a node for every entry the kernel caches: a listing
// with attributes of a directory of 200,000 entries leaves some 37 MiB of
// them live. With the collector's default GOGC=100 the heap may grow to
// twice what is live before a collection, and the resident set with it.
// A fixed small GOGC would bound that, but a small heap would then be
// collected every few hundred requests (each request leaves about a
// kilobyte of garbage in the protocol layer). So the headroom is
// gcHeadroom or a quarter of the live heap, whichever is more: the
// default while little is live, GOGC=25 from 40 MiB live.
const gcHeadroom = 10 << 20

// tuneGC sets GOGC after every collection from the heap left live,
// unless the environment sets GOGC.
func tuneGC() {
	if _, ok := os.LookupEnv("GOGC"); ok {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	percent := 100
	var rearm func(*gcSentinel)
	rearm = func(*gcSentinel) {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			if p := gcPercent(sample[0].Value.Uint64()); p != percent {
				percent = p
				debug.SetGCPercent(p)
			}
		}
		// Finalizers run after the collection that found the object
		// unreachable: a new one waits for the next.
		runtime.SetFinalizer(new(gcSentinel), rearm)
	}
	runtime.SetFinalizer(new(gcSentinel), rearm)
}

// gcSentinel is an object whose finalizer runs once a collection is
// done. It holds a pointer so that it is not a tiny allocation, whose
// finalizer might never run.
type gcSentinel struct{ _ *int }

// gcPercent is the GOGC for live bytes of heap.
func gcPercent(live uint64) int {
	if live == 0 {
		return 100
	}
	// In steps of 5: each change stops the world for a moment.
	return int(max(25, min(100, 100*gcHeadroom/live))) / 5 * 5
}
