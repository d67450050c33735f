package ttlcache_test

import (
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/ttlcache"
)

func TestExpiryClearAndBound(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	c := ttlcache.New[string, int](5*time.Second, 3)
	c.Put("a", 1, now)
	if v, ok := c.Get("a", now.Add(5*time.Second-time.Nanosecond)); !ok || v != 1 {
		t.Errorf("Get() just before the TTL = %d, %v; want 1, true", v, ok)
	}
	if _, ok := c.Get("a", now.Add(5*time.Second)); ok {
		t.Error("Get() at the TTL found the entry")
	}
	c.Put("b", 2, now)
	c.Clear()
	if _, ok := c.Get("b", now); ok {
		t.Error("Get() after Clear found the entry")
	}
	for i, k := range []string{"a", "b", "c", "d"} {
		c.Put(k, i, now)
	}
	if n := c.Len(); n > 3 {
		t.Errorf("Len() = %d, want at most 3", n)
	}
	if v, ok := c.Get("d", now); !ok || v != 3 {
		t.Errorf("Get() of the last entry put = %d, %v; want 3, true", v, ok)
	}
}
