package users_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/users"
)

func TestUsersAndTokens(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		us := users.New(db)
		u, tok, err := us.CreateWithToken(ctx, "Ann@Example.com", "Ann", false)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok.Reveal(), users.TokenPrefix) {
			t.Errorf("token %q lacks the prefix", tok.Reveal())
		}
		got, err := us.Authenticate(ctx, tok.Reveal())
		if err != nil || got.ID != u.ID {
			t.Fatalf("Authenticate() = %v, %v", got, err)
		}
		for _, bad := range []string{"", "mst_", "mst_nope", tok.Reveal() + "x", strings.ToUpper(tok.Reveal()), "Bearer " + tok.Reveal()} {
			if _, err := us.Authenticate(ctx, bad); !errors.Is(err, apperr.ErrUnauthenticated) {
				t.Errorf("Authenticate(%q) = %v, want unauthenticated", bad, err)
			}
		}
		// Only the hash is stored.
		var stored []string
		db.WithContext(ctx).Raw("SELECT hash FROM api_tokens").Scan(&stored)
		for _, h := range stored {
			if strings.Contains(h, tok.Reveal()) || strings.Contains(tok.Reveal(), h) {
				t.Errorf("the token is stored in clear")
			}
		}
		if _, err := us.Create(ctx, "ann@EXAMPLE.com", "Other", false); !errors.Is(err, apperr.ErrConflict) {
			t.Errorf("Create() with the same address in other case = %v, want conflict", err)
		}
		for _, bad := range []string{"", "ann", "Ann <ann@example.com>", "ann@example.com\r\nBcc: x@y.z"} {
			_, err := us.Create(ctx, bad, "x", false)
			var ae *apperr.Error
			if !errors.As(err, &ae) || ae.Field != "email" {
				t.Errorf("Create(%q) = %v, want an invalid email error naming the field", bad, err)
			}
		}
		if byEmail, err := us.ByEmail(ctx, "ANN@example.com"); err != nil || byEmail.ID != u.ID {
			t.Errorf("ByEmail() = %v, %v", byEmail, err)
		}
		second, err := us.IssueToken(ctx, u.ID, "cli")
		if err != nil || second == tok {
			t.Fatalf("IssueToken() = %v", err)
		}
		if got, err := us.Authenticate(ctx, second.Reveal()); err != nil || got.ID != u.ID {
			t.Errorf("second token: %v", err)
		}
		list, err := us.List(ctx)
		if err != nil || len(list) != 1 {
			t.Errorf("List() = %v, %v", list, err)
		}
	})
}

// Bootstrap creates exactly one admin, even when instances race.
func TestBootstrapOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		us := users.New(db)
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			created int
		)
		for range 4 {
			wg.Go(func() {
				_, tok, ok, err := us.Bootstrap(ctx, "admin@localhost")
				if err != nil {
					t.Errorf("Bootstrap() = %v", err)
				}
				mu.Lock()
				defer mu.Unlock()
				if ok {
					created++
					if tok.IsZero() {
						t.Errorf("Bootstrap() created an admin without a token")
					}
				}
			})
		}
		wg.Wait()
		if created != 1 {
			t.Errorf("Bootstrap() created %d admins, want 1", created)
		}
		list, _ := us.List(ctx)
		if len(list) != 1 || !list[0].Admin {
			t.Errorf("users after bootstrap = %+v", list)
		}
	})
}

// Tokens lists a user's tokens without their values; RevokeToken ends one
// token only, and only its owner's.
func TestTokensAndRevoke(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		us := users.New(db)
		ann, first, err := us.CreateWithToken(ctx, "ann@example.com", "Ann", false)
		if err != nil {
			t.Fatal(err)
		}
		second, err := us.IssueToken(ctx, ann.ID, "cli")
		if err != nil {
			t.Fatal(err)
		}
		bob, _, err := us.CreateWithToken(ctx, "bob@example.com", "Bob", false)
		if err != nil {
			t.Fatal(err)
		}
		toks, err := us.Tokens(ctx, ann.ID)
		if err != nil || len(toks) != 2 || toks[0].Name != "first" || toks[1].Name != "cli" || toks[0].UserID != ann.ID {
			t.Fatalf("Tokens() = %+v, %v; want first and cli", toks, err)
		}
		if err := us.RevokeToken(ctx, bob.ID, toks[1].ID); !errors.Is(err, apperr.ErrNotFound) {
			t.Errorf("RevokeToken() of another user's token = %v, want not found", err)
		}
		if _, err := us.Authenticate(ctx, second.Reveal()); err != nil {
			t.Fatalf("Authenticate() before revoking = %v", err)
		}
		if err := us.RevokeToken(ctx, ann.ID, toks[1].ID); err != nil {
			t.Fatalf("RevokeToken() = %v", err)
		}
		if _, err := us.Authenticate(ctx, second.Reveal()); !errors.Is(err, apperr.ErrUnauthenticated) {
			t.Errorf("Authenticate() with a revoked token = %v, want unauthenticated", err)
		}
		if _, err := us.Authenticate(ctx, first.Reveal()); err != nil {
			t.Errorf("Authenticate() with the other token = %v", err)
		}
		if err := us.RevokeToken(ctx, ann.ID, toks[1].ID); !errors.Is(err, apperr.ErrNotFound) {
			t.Errorf("RevokeToken() twice = %v, want not found", err)
		}
	})
}
