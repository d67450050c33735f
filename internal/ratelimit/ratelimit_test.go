package ratelimit

import (
	"errors"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
)

func TestAllowSlidingWindow(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	l := New(func() time.Time { return now })
	user := Rule{Key: "user:1", Limit: 3, Per: time.Minute, What: "checks per user"}
	host := Rule{Key: "host:h", Limit: 5, Per: time.Minute, What: "checks per server"}
	for i := range 3 {
		if err := l.Allow(user, host); err != nil {
			t.Fatalf("action %d refused: %v", i+1, err)
		}
		now = now.Add(10 * time.Second)
	}
	err := l.Allow(user, host)
	ae, ok := apperr.As(err)
	if !errors.Is(err, apperr.ErrRateLimited) || !ok || ae.RetryAfter != 30*time.Second {
		t.Fatalf("4th action = %v (retry after %v), want 429 after 30 s", err, ae.RetryAfter)
	}
	// The refused action used no budget of the host.
	other := Rule{Key: "user:2", Limit: 3, Per: time.Minute}
	if err := l.Allow(other, host); err != nil {
		t.Fatalf("another user on the same host: %v", err)
	}
	if err := l.Allow(other, host); err != nil {
		t.Fatalf("another user, 2nd: %v", err)
	}
	if err := l.Allow(other, host); !errors.Is(err, apperr.ErrRateLimited) {
		t.Errorf("the host's 6th action = %v, want refused by the host rule", err)
	}
	now = now.Add(31 * time.Second)
	if err := l.Allow(user); err != nil {
		t.Errorf("after the window moved: %v", err)
	}
}

func TestNilLimiterAllows(t *testing.T) {
	var l *Limiter
	if err := l.Allow(Rule{Key: "k", Limit: 0, Per: time.Second}); err != nil {
		t.Errorf("nil limiter refused: %v", err)
	}
}
