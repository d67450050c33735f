// Package users keeps the people who use mailsync and their API tokens.
//
// Invariants:
//   - An email address belongs to at most one user, compared without case.
//   - A token is shown once, when it is issued; only its SHA-256 hash is
//     stored, so a database leak yields no usable token.
//   - Authenticate answers the same error for an unknown, malformed or
//     deleted token.
package users

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/ttlcache"
	"gorm.io/gorm"
)

// TokenPrefix starts every API token, so that secret scanners and people
// recognise one.
const TokenPrefix = "mst_"

// User is a person with access to the API.
type User struct {
	ID        int64
	Email     string
	Name      string
	Admin     bool
	CreatedAt time.Time
}

type apiToken struct {
	ID         int64
	UserID     int64
	Hash       string
	Name       string
	CreatedAt  time.Time
	LastUsedAt *time.Time
}

func (apiToken) TableName() string { return "api_tokens" }

// Store reads and writes users and tokens.
type Store struct {
	db  *store.DB
	now func() time.Time

	known *ttlcache.Cache[string, User] // by token hash: tokens checked lately
}

// A token checked against the database is trusted for authCacheTTL without
// asking it again, for up to authCacheMax tokens: every API request
// authenticates, and two queries a request were a seventh of the service's
// CPU under load. A token revoked through this Store stops working at once;
// one deleted by another instance or by the mailsync command, within
// authCacheTTL.
const (
	authCacheTTL = 5 * time.Second
	authCacheMax = 4096
)

// New returns a Store on db.
func New(db *store.DB) *Store {
	return &Store{db: db, now: func() time.Time { return time.Now().UTC() },
		known: ttlcache.New[string, User](authCacheTTL, authCacheMax)}
}

// NormalizeEmail validates a bare address and returns it trimmed.
func NormalizeEmail(field, email string) (string, error) {
	email = strings.TrimSpace(email)
	if email == "" {
		return "", apperr.Invalid(field, "required", "an email address is required")
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Address != email || a.Name != "" {
		return "", apperr.Invalid(field, "invalid_email", "%q is not a valid email address", email)
	}
	return email, nil
}

// Create adds a user.
func (s *Store) Create(ctx context.Context, email, name string, admin bool) (User, error) {
	var u User
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		u, err = s.create(tx, email, name, admin)
		return err
	})
	return u, err
}

// CreateWithToken adds a user and issues its first token in one transaction.
func (s *Store) CreateWithToken(ctx context.Context, email, name string, admin bool) (User, secret.Secret, error) {
	var (
		u   User
		tok secret.Secret
	)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		if u, err = s.create(tx, email, name, admin); err != nil {
			return err
		}
		tok, err = s.issue(tx, u.ID, "first")
		return err
	})
	return u, tok, err
}

func (s *Store) create(tx *gorm.DB, email, name string, admin bool) (User, error) {
	email, err := NormalizeEmail("email", email)
	if err != nil {
		return User{}, err
	}
	name = strings.TrimSpace(name)
	if strings.ContainsAny(name, "\r\n\x00") {
		return User{}, apperr.Invalid("name", "invalid_name", "the name must be one line")
	}
	u := User{Email: email, Name: name, Admin: admin, CreatedAt: s.now()}
	if err := tx.Create(&u).Error; err != nil {
		if store.IsDuplicate(err) {
			return User{}, &apperr.Error{Kind: apperr.ErrConflict, Code: "email_taken", Field: "email",
				Message: fmt.Sprintf("a user with the address %s exists already", email)}
		}
		return User{}, fmt.Errorf("create user %s: %w", email, err)
	}
	return u, nil
}

// IssueToken creates a new token for the user and returns it; it is never
// retrievable again.
func (s *Store) IssueToken(ctx context.Context, userID int64, name string) (secret.Secret, error) {
	var tok secret.Secret
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		tok, err = s.issue(tx, userID, name)
		return err
	})
	return tok, err
}

func (s *Store) issue(tx *gorm.DB, userID int64, name string) (secret.Secret, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	tok := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	t := apiToken{UserID: userID, Hash: hashToken(tok), Name: name, CreatedAt: s.now()}
	if err := tx.Create(&t).Error; err != nil {
		return "", fmt.Errorf("store token for user %d: %w", userID, err)
	}
	return secret.Secret(tok), nil
}

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// lastUsedGranularity bounds how often a token's last use is written.
const lastUsedGranularity = time.Minute

// Authenticate returns the user a token belongs to.
func (s *Store) Authenticate(ctx context.Context, token string) (User, error) {
	unauth := apperr.New(apperr.ErrUnauthenticated, "unauthenticated", "a valid API token is required")
	if !strings.HasPrefix(token, TokenPrefix) || len(token) > 200 {
		return User{}, unauth
	}
	hash := hashToken(token)
	now := s.now()
	if u, ok := s.known.Get(hash, now); ok {
		return u, nil
	}
	var t apiToken
	err := s.db.WithContext(ctx).Where("hash = ?", hash).Take(&t).Error
	if store.IsNotFound(err) {
		return User{}, unauth
	}
	if err != nil {
		return User{}, fmt.Errorf("look up token: %w", err)
	}
	u, err := s.ByID(ctx, t.UserID)
	if err != nil {
		if errors.Is(err, apperr.ErrNotFound) {
			return User{}, unauth
		}
		return User{}, err
	}
	if t.LastUsedAt == nil || now.Sub(*t.LastUsedAt) > lastUsedGranularity {
		// Best effort: a failed bookkeeping write must not refuse the request.
		_ = s.db.WithContext(ctx).Model(&apiToken{}).Where("id = ?", t.ID).Update("last_used_at", now).Error
	}
	s.known.Put(hash, u, now)
	return u, nil
}

// Token is an API token as listed: its name and dates, never its value.
type Token struct {
	ID         int64
	UserID     int64
	Name       string
	CreatedAt  time.Time
	LastUsedAt *time.Time
}

// Tokens lists a user's tokens, oldest first.
func (s *Store) Tokens(ctx context.Context, userID int64) ([]Token, error) {
	var ts []apiToken
	if err := s.db.WithContext(ctx).Where("user_id = ?", userID).Order("id").Find(&ts).Error; err != nil {
		return nil, fmt.Errorf("list tokens of user %d: %w", userID, err)
	}
	out := make([]Token, 0, len(ts))
	for _, t := range ts {
		out = append(out, Token{ID: t.ID, UserID: t.UserID, Name: t.Name, CreatedAt: t.CreatedAt, LastUsedAt: t.LastUsedAt})
	}
	return out, nil
}

// RevokeToken deletes one of a user's tokens: from then on it
// authenticates nobody. A token of another user answers as missing.
func (s *Store) RevokeToken(ctx context.Context, userID, tokenID int64) error {
	res := s.db.WithContext(ctx).Where("id = ? AND user_id = ?", tokenID, userID).Delete(&apiToken{})
	s.known.Clear()
	if res.Error != nil {
		return fmt.Errorf("revoke token %d of user %d: %w", tokenID, userID, res.Error)
	}
	if res.RowsAffected == 0 {
		return apperr.NotFound("token")
	}
	return nil
}

// ByID returns a user.
func (s *Store) ByID(ctx context.Context, id int64) (User, error) {
	var u User
	err := s.db.WithContext(ctx).Where("id = ?", id).Take(&u).Error
	if store.IsNotFound(err) {
		return User{}, apperr.NotFound("user")
	}
	if err != nil {
		return User{}, fmt.Errorf("read user %d: %w", id, err)
	}
	return u, nil
}

// ByEmail returns the user with that address, compared without case.
func (s *Store) ByEmail(ctx context.Context, email string) (User, error) {
	var u User
	err := s.db.WithContext(ctx).Where("lower(email) = lower(?)", strings.TrimSpace(email)).Take(&u).Error
	if store.IsNotFound(err) {
		return User{}, apperr.NotFound("user")
	}
	if err != nil {
		return User{}, fmt.Errorf("read user %s: %w", email, err)
	}
	return u, nil
}

// List returns every user, oldest first.
func (s *Store) List(ctx context.Context) ([]User, error) {
	var us []User
	if err := s.db.WithContext(ctx).Order("id").Find(&us).Error; err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return us, nil
}

// Bootstrap creates the first admin with a token when there is no user yet.
// created is false, and the token empty, when users exist already (also when
// another instance created the admin at the same moment).
func (s *Store) Bootstrap(ctx context.Context, email string) (u User, tok secret.Secret, created bool, err error) {
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&User{}).Count(&n).Error; err != nil {
			return fmt.Errorf("count users: %w", err)
		}
		if n > 0 {
			return nil
		}
		if u, err = s.create(tx, email, "Administrator", true); err != nil {
			return err
		}
		tok, err = s.issue(tx, u.ID, "first start")
		created = err == nil
		return err
	})
	if errors.Is(err, apperr.ErrConflict) {
		return User{}, "", false, nil
	}
	return u, tok, created, err
}
