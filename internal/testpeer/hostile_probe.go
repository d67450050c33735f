package testpeer

import (
	"bytes"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ProbeResult is what Probe measured around one call.
type ProbeResult struct {
	// HeapGrowth is the highest heap in use while the call ran, sampled
	// every millisecond, minus the heap in use before it (after a GC).
	// "In use" is the runtime's /memory/classes/heap/objects:bytes plus
	// /memory/classes/heap/unused:bytes — HeapInuse — so garbage not yet
	// collected counts: it over-estimates what the call keeps, never
	// under-estimates it.
	HeapGrowth int64
	// Allocated is every byte the call allocated (the TotalAlloc delta),
	// garbage included: a measure of churn, reported but not bounded.
	Allocated int64
	Elapsed   time.Duration
	// Panic is the value the call panicked with and its stack, nil if it
	// did not panic.
	Panic any
	// Hung is true when the call had not returned within
	// ProbeOptions.Limit; nothing else was measured then, and Leaked
	// holds every goroutine started since the call began.
	Hung bool
	// Leaked lists the stacks of goroutines the call started that were
	// still running at the deadline; empty when none.
	Leaked []string
}

// ProbeOptions tunes Probe; nil means the defaults.
type ProbeOptions struct {
	// LeakWait is how long the goroutines the call started may take to end
	// once it returned (default 5 s). The check polls; it ends as soon as
	// they are gone.
	LeakWait time.Duration
	// Limit is how long the call may take before it counts as hung
	// (default 30 s).
	Limit time.Duration
}

var probeMu sync.Mutex // one probe at a time: the heap figures are process-wide

// Probe runs f and measures it: the heap it grew (sampled), what it
// allocated, whether it panicked (recovered, reported in the result), and
// the goroutines it left behind. Goroutines that existed before f, and
// those of the hostile peers (whose stacks run in HostilePeer or
// HostileConn methods), are not counted. Probes are serialised, and the
// heap figures are only meaningful when no other test runs in parallel.
func Probe(t testing.TB, opts *ProbeOptions, f func()) ProbeResult {
	t.Helper()
	probeMu.Lock()
	defer probeMu.Unlock()
	wait, limit := 5*time.Second, 30*time.Second
	if opts != nil && opts.LeakWait > 0 {
		wait = opts.LeakWait
	}
	if opts != nil && opts.Limit > 0 {
		limit = opts.Limit
	}

	runtime.GC()
	before := goroutines()
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
	}
	read := func() (inuse, allocs int64) {
		metrics.Read(samples)
		return int64(samples[0].Value.Uint64() + samples[1].Value.Uint64()), int64(samples[2].Value.Uint64())
	}
	base, alloc0 := read()

	var (
		peak     = base
		stop     = make(chan struct{})
		sampled  = make(chan struct{})
		sampling sync.WaitGroup
	)
	sampling.Go(func() {
		s := make([]metrics.Sample, 2)
		copy(s, samples[:2])
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		first := true
		for {
			metrics.Read(s)
			if v := int64(s[0].Value.Uint64() + s[1].Value.Uint64()); v > peak {
				peak = v
			}
			if first {
				close(sampled)
				first = false
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	<-sampled

	res := ProbeResult{}
	start := time.Now()
	returned := make(chan any, 1)
	go func() {
		defer func() {
			v := recover()
			if v != nil {
				v = fmt.Sprintf("%v\n%s", v, debug.Stack())
			}
			returned <- v
		}()
		f()
	}()
	hung := time.NewTimer(limit)
	defer hung.Stop()
	select {
	case res.Panic = <-returned:
	case <-hung.C:
		res.Hung = true
	}
	res.Elapsed = time.Since(start)
	close(stop)
	sampling.Wait()
	if res.Hung {
		res.Leaked = newGoroutines(before)
		return res
	}
	inuse, alloc1 := read()
	peak = max(peak, inuse)
	res.HeapGrowth = peak - base
	res.Allocated = alloc1 - alloc0

	// Leaks: poll until every goroutine started during f is gone.
	deadline := time.Now().Add(wait)
	backoff := time.Millisecond
	for {
		extra := newGoroutines(before)
		if len(extra) == 0 {
			break
		}
		if time.Now().After(deadline) {
			res.Leaked = extra
			break
		}
		runtime.Gosched()
		time.Sleep(backoff) // polling for goroutines to end, bounded by deadline
		backoff = min(2*backoff, 50*time.Millisecond)
	}
	return res
}

// goroutines returns the stacks of the running goroutines by id.
func goroutines() map[uint64]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[uint64]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		head, _, _ := bytes.Cut(g, []byte("\n"))
		// "goroutine 123 [running]:"
		f := strings.Fields(string(head))
		if len(f) < 2 || f[0] != "goroutine" {
			continue
		}
		id, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		out[id] = string(g)
	}
	return out
}

// newGoroutines returns the stacks of goroutines not in before, leaving
// out the hostile peers' own.
func newGoroutines(before map[uint64]string) []string {
	var out []string
	for id, st := range goroutines() {
		if _, ok := before[id]; ok {
			continue
		}
		if strings.Contains(st, "testpeer.(*HostilePeer)") || strings.Contains(st, "testpeer.(*HostileConn)") ||
			strings.Contains(st, "testpeer.Probe") {
			continue
		}
		out = append(out, st)
	}
	return out
}

// ProbeTally sums the probes of a suite, for its closing line.
type ProbeTally struct {
	Rows, Panics, Hangs, Leaks int // Leaks counts goroutines
	MaxHeap                    int64
	MaxHeapRow                 string
	Elapsed                    time.Duration
}

// Add counts one row's probe.
func (t *ProbeTally) Add(row string, pr ProbeResult) {
	t.Rows++
	if pr.Panic != nil {
		t.Panics++
	}
	if pr.Hung {
		t.Hangs++
	} else {
		t.Leaks += len(pr.Leaked)
	}
	if pr.HeapGrowth > t.MaxHeap {
		t.MaxHeap, t.MaxHeapRow = pr.HeapGrowth, row
	}
	t.Elapsed += pr.Elapsed
}

func (t ProbeTally) String() string {
	return fmt.Sprintf("%d rows, %d panics, %d hangs, %d leaked goroutines, max heap growth %.1f MiB (%s), %v in the calls",
		t.Rows, t.Panics, t.Hangs, t.Leaks, float64(t.MaxHeap)/(1<<20), t.MaxHeapRow, t.Elapsed.Round(time.Millisecond))
}

// MiB is n bytes in mebibytes, for messages.
func MiB(n int64) float64 { return float64(n) / (1 << 20) }

// Check fails t on a hang, a panic, a leaked goroutine or heap growth of
// maxHeap bytes or more.
func (pr ProbeResult) Check(t testing.TB, maxHeap int64) {
	t.Helper()
	if pr.Hung {
		t.Fatalf("the call did not return within %v; goroutines:\n%s", pr.Elapsed, strings.Join(pr.Leaked, "\n\n"))
	}
	if pr.Panic != nil {
		t.Fatalf("the call panicked: %v", pr.Panic)
	}
	if len(pr.Leaked) > 0 {
		t.Errorf("%d goroutines left running:\n%s", len(pr.Leaked), strings.Join(pr.Leaked, "\n\n"))
	}
	if pr.HeapGrowth >= maxHeap {
		t.Errorf("heap grew by %.1f MiB, want < %.0f MiB", MiB(pr.HeapGrowth), MiB(maxHeap))
	}
}
