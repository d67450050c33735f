// Package ttlcache is a small map whose entries expire: what a process
// read from the database lately, reused for a few seconds.
//
// Invariants:
//   - An entry is returned only before its deadline (put time + TTL), on
//     the clock the caller passes in.
//   - At most Max entries are held: a Put into a full cache first drops
//     them all (simple, and enough for the few hot keys it is for).
//   - Clear drops everything at once, for a change made by this process.
package ttlcache

import (
	"sync"
	"time"
)

// Cache maps K to V for TTL after each Put. The zero value is not usable;
// use New. Safe for concurrent use.
type Cache[K comparable, V any] struct {
	ttl time.Duration
	max int

	mu sync.Mutex
	m  map[K]entry[V]
}

type entry[V any] struct {
	v     V
	until time.Time
}

// New returns a cache keeping each entry for ttl, at most max entries.
func New[K comparable, V any](ttl time.Duration, max int) *Cache[K, V] {
	return &Cache[K, V]{ttl: ttl, max: max}
}

// Get returns k's value if it was put less than TTL before now.
func (c *Cache[K, V]) Get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || !now.Before(e.until) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// Put stores v for k until now + TTL.
func (c *Cache[K, V]) Put(k K, v V, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= c.max {
		c.m = make(map[K]entry[V])
	}
	c.m[k] = entry[V]{v: v, until: now.Add(c.ttl)}
}

// Clear drops every entry.
func (c *Cache[K, V]) Clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
}

// Len is the number of entries held, expired ones included.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
