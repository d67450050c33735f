package outgoing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/store"
)

// Route says which sender a message leaves through.
type Route struct {
	Kind string // "system" here; later "mailbox", "smtp", "address"
	ID   int64
	// SenderName is put into From when the message has no name of its own.
	SenderName string
	// EnvelopeFrom is the MAIL FROM address; "" means the From address.
	EnvelopeFrom string
	// SenderHeader, when set, is written as the Sender header: the mailbox
	// that actually sends on behalf of From (RFC 5322 3.6.2).
	SenderHeader string
}

// Target is what a worker needs to send along a route.
type Target struct {
	Settings Settings
	Email    string // the account's own address, for the log
	// DailyLimit caps messages per rolling 24 hours; 0 = none.
	DailyLimit int
}

// Router resolves one kind of sender.
type Router interface {
	// Kind names the routes this router makes.
	Kind() string
	// Route returns the route for the From address; ok is false when this
	// router has no sender with that address. An error refuses the message.
	Route(ctx context.Context, c Caller, from string) (r Route, ok bool, err error)
	// Target loads the settings of a route at send time. An error wrapping
	// apperr.ErrNotFound means the sender is gone: its messages fail.
	Target(ctx context.Context, id int64) (Target, error)
	// AuthFailed records that the server refused the sender's login; Target
	// then answers ErrAuthFailed until the sender's settings change.
	AuthFailed(ctx context.Context, id int64) error
}

// CopySaver is a Router that files a copy of each message it sent (a
// mailbox's "save a copy on the mail server"). The result is recorded on the
// message; a failure is logged and shown and never causes a resend.
type CopySaver interface {
	SaveCopy(ctx context.Context, id int64, m OutboxMessage) (result string, err error)
}

// KindSystem is the route kind of system SMTP accounts.
const KindSystem = "system"

// route picks the sender for a From address, strictly: no match is an
// error, never a fallback.
func (s *Service) route(ctx context.Context, c Caller, from string) (Route, error) {
	var refused error
	for _, r := range s.routers {
		rt, ok, err := r.Route(ctx, c, from)
		if err != nil {
			if errors.Is(err, apperr.ErrForbidden) {
				refused = err
				continue
			}
			return Route{}, err
		}
		if ok {
			return rt, nil
		}
	}
	if refused != nil {
		return Route{}, refused
	}
	return Route{}, &apperr.Error{Kind: apperr.ErrUnprocessable, Code: "no_sender_account", Field: "from",
		Message: fmt.Sprintf("no active sender account has the address %s", from)}
}

func (s *Service) target(ctx context.Context, kind string, id int64) (Target, error) {
	for _, r := range s.routers {
		if r.Kind() == kind {
			return r.Target(ctx, id)
		}
	}
	return Target{}, apperr.NotFound("sender kind " + kind)
}

type systemRouter struct{ s *Service }

func (systemRouter) Kind() string { return KindSystem }

func (r systemRouter) Route(ctx context.Context, c Caller, from string) (Route, bool, error) {
	key := strings.ToLower(from)
	now := r.s.now()
	a, ok := r.s.routes.Get(key, now)
	if !ok {
		err := r.s.db.WithContext(ctx).Select("id", "email", "sender_name", "shared_with_users").
			Where("lower(email) = lower(?) AND active = ?", from, true).Take(&a).Error
		if store.IsNotFound(err) {
			return Route{}, false, nil
		}
		if err != nil {
			return Route{}, false, fmt.Errorf("route %s: %w", from, err)
		}
		r.s.routes.Put(key, a, now)
	}
	if !c.Admin && !a.SharedWithUsers {
		return Route{}, false, &apperr.Error{Kind: apperr.ErrForbidden, Code: "sender_not_allowed", Field: "from",
			Message: fmt.Sprintf("you may not send as %s: that system account is not shared with users", a.Email)}
	}
	return Route{Kind: KindSystem, ID: a.ID, SenderName: a.SenderName}, true, nil
}

func (r systemRouter) Target(ctx context.Context, id int64) (Target, error) {
	a, err := r.s.GetAccount(ctx, id)
	if err != nil {
		return Target{}, err
	}
	if a.AuthFailed {
		return Target{Email: a.Email}, fmt.Errorf("SMTP account %s: %w", a.Email, ErrAuthFailed)
	}
	if !a.Active {
		return Target{}, &apperr.Error{Kind: apperr.ErrNotFound, Code: "account_inactive",
			Message: fmt.Sprintf("the SMTP account %s is inactive", a.Email)}
	}
	set, err := r.s.accountSettings(a)
	if err != nil {
		return Target{}, err
	}
	return Target{Settings: set, Email: a.Email, DailyLimit: a.DailyLimit}, nil
}

func (r systemRouter) AuthFailed(ctx context.Context, id int64) error {
	return r.s.db.WithContext(ctx).Model(&Account{}).Where("id = ?", id).Update("auth_failed", true).Error
}

// A From address's active system account, once read, is reused for
// routeCacheTTL, for up to routeCacheMax addresses: a portal sends most of
// its mail from a few addresses, and the lookup was a tenth of the CPU of a
// submission. Any change to an account through this Service forgets them
// all at once; a change by another instance is seen within routeCacheTTL.
// Only the submission's routing uses it: the worker reads the account
// again before it sends, and never uses an inactive one.
const (
	routeCacheTTL = 5 * time.Second
	routeCacheMax = 1024
)
