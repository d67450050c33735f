package users

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
)

// A token deleted by another instance (another Store on the same database)
// stops working here once authCacheTTL has passed, not later.
func TestRevokedElsewhereStopsWithinTheCacheTTL(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
		here, there := New(db), New(db)
		here.now = func() time.Time { return now }
		u, tok, err := here.CreateWithToken(ctx, "ann@example.com", "Ann", false)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := here.Authenticate(ctx, tok.Reveal()); err != nil || got.ID != u.ID {
			t.Fatalf("Authenticate() = %+v, %v; want ann", got, err)
		}
		toks, err := there.Tokens(ctx, u.ID)
		if err != nil || len(toks) != 1 {
			t.Fatalf("Tokens() = %+v, %v", toks, err)
		}
		if err := there.RevokeToken(ctx, u.ID, toks[0].ID); err != nil {
			t.Fatal(err)
		}
		if _, err := there.Authenticate(ctx, tok.Reveal()); !errors.Is(err, apperr.ErrUnauthenticated) {
			t.Errorf("Authenticate() on the revoking instance = %v, want unauthenticated", err)
		}
		now = now.Add(authCacheTTL - time.Millisecond)
		if _, err := here.Authenticate(ctx, tok.Reveal()); err != nil {
			t.Errorf("Authenticate() within the TTL = %v, want the remembered user", err)
		}
		now = now.Add(time.Millisecond)
		if _, err := here.Authenticate(ctx, tok.Reveal()); !errors.Is(err, apperr.ErrUnauthenticated) {
			t.Errorf("Authenticate() after the TTL = %v, want unauthenticated", err)
		}
	})
}
