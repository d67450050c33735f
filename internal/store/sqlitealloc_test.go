package store

import (
	"syscall"
	"testing"

	"modernc.org/libc"
	"modernc.org/libc/sys/types"
)

// TestAllocPinsStopChurn: a blob-sized C allocation made and freed over
// and over maps and faults in fresh memory each time unless its size class
// is pinned; with the pins the freed slot is reused.
func TestAllocPinsStopChurn(t *testing.T) {
	tls := libc.NewTLS()
	defer tls.Close()
	const rounds, size = 500, 10 << 10
	faults := func() int64 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return ru.Minflt
	}
	churn := func() int64 {
		before := faults()
		for range rounds {
			p := libc.Xmalloc(tls, types.Size_t(size))
			if p == 0 {
				t.Fatal("malloc failed")
			}
			libc.Xmemset(tls, p, 1, size) // touch every page, as a copied blob does
			libc.Xfree(tls, p)
		}
		return faults() - before
	}

	pins := pinAllocator()
	churn() // the allocator hands out each slot of the pinned page once before it reuses any
	pinned := churn()
	pins.release()
	unpinned := churn()
	t.Logf("minor page faults over %d rounds of a %d-byte allocation: %d pinned, %d unpinned", rounds, size, pinned, unpinned)
	if pinned > rounds/10 {
		t.Errorf("pinned: %d page faults, want the freed slot reused (< %d)", pinned, rounds/10)
	}
	if unpinned < rounds {
		t.Logf("unpinned churn faulted less than once a round (%d): the allocator may have changed; the pins may no longer be needed", unpinned)
	}
}
