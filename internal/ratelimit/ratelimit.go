// Package ratelimit counts actions per key in sliding windows, so that
// mailsync cannot be used as a password-guessing proxy: every check,
// connect and confirmation a user triggers dials a mail server with the
// credentials they typed, and a provider that sees too many failures bans
// the address they come from — the service's own.
//
// Invariants:
//   - Allow either records the action under every key or under none: a
//     refused action does not use up budget.
//   - Counts live in this process only; with several instances each
//     enforces the limits on its own share of requests.
package ratelimit

import (
	"fmt"
	"sync"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
)

// Rule limits one key to Limit actions per Per.
type Rule struct {
	Key   string // e.g. "user:12", "host:smtp.example.com"
	Limit int
	Per   time.Duration
	// What names the limit in the refusal, e.g. "checks per user".
	What string
}

// Limiter keeps the sliding windows.
type Limiter struct {
	mu    sync.Mutex
	now   func() time.Time
	seen  map[string][]time.Time
	calls int
}

// New returns a Limiter; now may be nil for the system clock.
func New(now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{now: now, seen: map[string][]time.Time{}}
}

// Allow records one action under every rule's key, or refuses with a 429
// *apperr.Error (RetryAfter set) when any rule's window is full.
func (l *Limiter) Allow(rules ...Rule) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, r := range rules {
		w := l.window(r, now)
		if len(w) >= r.Limit {
			return &apperr.Error{Kind: apperr.ErrRateLimited, Code: "rate_limited",
				Message:    fmt.Sprintf("too many %s (at most %d per %s); try again later", r.What, r.Limit, r.Per),
				RetryAfter: w[0].Add(r.Per).Sub(now)}
		}
	}
	for _, r := range rules {
		l.seen[r.Key] = append(l.window(r, now), now)
	}
	l.calls++
	if l.calls%1024 == 0 {
		l.sweep(now)
	}
	return nil
}

// window returns the key's actions still inside the rule's period.
func (l *Limiter) window(r Rule, now time.Time) []time.Time {
	w := l.seen[r.Key]
	i := 0
	for i < len(w) && !w[i].After(now.Add(-r.Per)) {
		i++
	}
	return w[i:]
}

// sweep forgets keys with nothing in the last day, bounding memory.
func (l *Limiter) sweep(now time.Time) {
	for k, w := range l.seen {
		if len(w) == 0 || w[len(w)-1].Before(now.Add(-24*time.Hour)) {
			delete(l.seen, k)
		}
	}
}
