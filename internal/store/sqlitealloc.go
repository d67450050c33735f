package store

import (
	"modernc.org/libc"
	"modernc.org/libc/sys/types"
)

// allocPins keeps one small allocation alive in each of the C allocator's
// size classes while a SQLite database is open.
//
// The pure-Go SQLite (modernc.org) allocates C memory from 1 MiB mapped
// pages, one page per size class, and unmaps a page as soon as its last
// allocation is freed. SQLite's own use is bursty — a blob bound to a
// statement, a statement journal, a prepared statement's scratch — so on
// a busy outbox almost every statement mapped a fresh page, faulted its
// memory in and unmapped it again: a tenth of serve's CPU
// (docs/benchmarks.md, "Outbox throughput"). A page that still holds one
// live allocation stays mapped and its freed slots are reused. The pins
// cost one touched memory page per class; allocations over 256 KiB get
// mappings of their own and are not helped.
type allocPins struct {
	tls  *libc.TLS
	ptrs []uintptr
}

// Size classes of modernc.org/memory v1.5: powers of two from 16 bytes to
// a quarter of its 1 MiB page.
const (
	minAllocClass = 4
	maxAllocClass = 18
)

func pinAllocator() *allocPins {
	p := &allocPins{tls: libc.NewTLS()}
	for log := minAllocClass; log <= maxAllocClass; log++ {
		if ptr := libc.Xmalloc(p.tls, types.Size_t(1)<<log); ptr != 0 {
			p.ptrs = append(p.ptrs, ptr)
		}
	}
	return p
}

func (p *allocPins) release() {
	if p == nil {
		return
	}
	for _, ptr := range p.ptrs {
		libc.Xfree(p.tls, ptr)
	}
	p.ptrs = nil
	p.tls.Close()
}
