package outgoing

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"gorm.io/gorm"
)

// Confirmation limits (the issue's: codes live 30 minutes and die after 5
// wrong tries; 5 confirmations per user per hour, 3 per address per day).
const (
	codeTTL          = 30 * time.Minute
	codeMaxAttempts  = 5
	perUserPerHour   = 5
	perAddressPerDay = 3
)

// SenderView is one entry of the sender list: a senders row or a system
// account shared with users.
type SenderView struct {
	ID           string // "12" for a senders row, "system-5" for system account 5
	Kind         string
	Email        string
	Name         string
	Shared       bool
	Owner        int64 // 0 for system accounts
	MailboxID    *int64
	Deletable    bool
	NotDeletable string // why not, as a stable code
}

// systemSenderID names system account id among senders.
func systemSenderID(id int64) string { return "system-" + strconv.FormatInt(id, 10) }

// parseSenderID splits a sender id into its table and number.
func parseSenderID(id string) (system bool, n int64, ok bool) {
	if rest, found := strings.CutPrefix(id, "system-"); found {
		n, err := strconv.ParseInt(rest, 10, 64)
		return true, n, err == nil && n > 0
	}
	n, err := strconv.ParseInt(id, 10, 64)
	return false, n, err == nil && n > 0
}

// Senders lists the senders a caller may use: their own, shared ones, and
// system accounts shared with users (an admin sees every sender).
func (s *Service) Senders(ctx context.Context, c Caller) ([]SenderView, error) {
	rows, err := s.ListSenders(ctx, c)
	if err != nil {
		return nil, err
	}
	out := make([]SenderView, 0, len(rows))
	for _, sd := range rows {
		out = append(out, s.senderView(c, sd))
	}
	var accts []Account
	q := s.db.WithContext(ctx).Where("active = ?", true).Order("id")
	if !c.Admin {
		q = q.Where("shared_with_users = ?", true)
	}
	if err := q.Find(&accts).Error; err != nil {
		return nil, fmt.Errorf("list shared system accounts: %w", err)
	}
	for _, a := range accts {
		out = append(out, SenderView{ID: systemSenderID(a.ID), Kind: KindSystem, Email: a.Email, Name: a.SenderName,
			Shared: a.SharedWithUsers, NotDeletable: "sender_managed_by_admin"})
	}
	return out, nil
}

func (s *Service) senderView(c Caller, sd Sender) SenderView {
	v := SenderView{ID: strconv.FormatInt(sd.ID, 10), Kind: sd.Kind, Email: sd.Email, Name: sd.Name, Shared: sd.Shared,
		Owner: sd.UserID, MailboxID: sd.MailboxID}
	switch {
	case sd.Kind == KindMailbox:
		v.NotDeletable = "sender_managed_by_mailbox"
	case sd.UserID == c.UserID || c.Admin:
		v.Deletable = true
	default:
		v.NotDeletable = "not_owner"
	}
	return v
}

// GetSender returns a sender the caller may see.
func (s *Service) GetSender(ctx context.Context, c Caller, id string) (SenderView, error) {
	system, n, ok := parseSenderID(id)
	if !ok {
		return SenderView{}, apperr.NotFound("sender")
	}
	if system {
		a, err := s.GetAccount(ctx, n)
		if err != nil || !a.Active || (!c.Admin && !a.SharedWithUsers) {
			return SenderView{}, apperr.NotFound("sender")
		}
		return SenderView{ID: id, Kind: KindSystem, Email: a.Email, Name: a.SenderName, Shared: a.SharedWithUsers,
			NotDeletable: "sender_managed_by_admin"}, nil
	}
	sd, err := s.visibleSender(ctx, c, n)
	if err != nil {
		return SenderView{}, err
	}
	return s.senderView(c, sd), nil
}

func (s *Service) visibleSender(ctx context.Context, c Caller, id int64) (Sender, error) {
	var sd Sender
	q := s.db.WithContext(ctx).Where("id = ?", id)
	if !c.Admin {
		q = q.Where("user_id = ? OR shared = ?", c.UserID, true)
	}
	err := q.Take(&sd).Error
	if store.IsNotFound(err) {
		return Sender{}, apperr.NotFound("sender")
	}
	if err != nil {
		return Sender{}, fmt.Errorf("read sender %d: %w", id, err)
	}
	return sd, nil
}

// DeleteSender deletes an own-SMTP or confirmed-address sender (by its owner
// or an admin). A mailbox's sender goes only with the mailbox's external
// SMTP; a system account only on the admin side.
func (s *Service) DeleteSender(ctx context.Context, c Caller, id string) error {
	v, err := s.GetSender(ctx, c, id)
	if err != nil {
		return err
	}
	switch {
	case v.Kind == KindSystem:
		return apperr.Conflict("sender_managed_by_admin",
			"%s is a system SMTP account: an administrator manages it under SMTP accounts", v.Email)
	case v.Kind == KindMailbox:
		return apperr.Conflict("sender_managed_by_mailbox",
			"%s comes from a connected mailbox: turn off \"send via external SMTP\" on the mailbox, or disconnect it", v.Email)
	case !v.Deletable:
		return apperr.New(apperr.ErrForbidden, "not_owner", "only the owner of %s or an administrator may delete it", v.Email)
	}
	_, n, _ := parseSenderID(id)
	if err := s.db.WithContext(ctx).Where("id = ?", n).Delete(&Sender{}).Error; err != nil {
		return fmt.Errorf("delete sender %d: %w", n, err)
	}
	return nil
}

// SenderPatch changes a sender; nil keeps. A change to a connection field is
// checked first.
type SenderPatch struct {
	Name     *string
	Shared   *bool
	Host     *string
	Port     *int
	Security *Security
	Auth     *AuthMethod
	Login    *string
	Password *secret.Secret
}

// UpdateSender changes an own-SMTP or confirmed-address sender.
func (s *Service) UpdateSender(ctx context.Context, c Caller, id string, p SenderPatch) (SenderView, *Report, error) {
	v, err := s.GetSender(ctx, c, id)
	if err != nil {
		return SenderView{}, nil, err
	}
	switch {
	case v.Kind == KindSystem:
		return SenderView{}, nil, apperr.Conflict("sender_managed_by_admin", "%s is a system SMTP account: an administrator manages it", v.Email)
	case v.Kind == KindMailbox:
		return SenderView{}, nil, apperr.Conflict("sender_managed_by_mailbox", "%s comes from a connected mailbox: change it in the mailbox's settings", v.Email)
	case !v.Deletable:
		return SenderView{}, nil, apperr.New(apperr.ErrForbidden, "not_owner", "only the owner of %s or an administrator may change it", v.Email)
	}
	_, n, _ := parseSenderID(id)
	var sd Sender
	if err := s.db.WithContext(ctx).Where("id = ?", n).Take(&sd).Error; err != nil {
		return SenderView{}, nil, fmt.Errorf("read sender %d: %w", n, err)
	}
	upd := map[string]any{"updated_at": s.now()}
	if p.Name != nil {
		name := strings.TrimSpace(*p.Name)
		if err := checkHeaderText("name", name); err != nil {
			return SenderView{}, nil, err
		}
		upd["name"], sd.Name = name, name
	}
	if p.Shared != nil {
		upd["shared"], sd.Shared = *p.Shared, *p.Shared
	}
	var rep *Report
	if sd.Kind == KindSMTP && (p.Host != nil || p.Port != nil || p.Security != nil || p.Auth != nil || p.Login != nil || p.Password != nil) {
		old, err := s.senderSettings(sd)
		if err != nil {
			return SenderView{}, nil, err
		}
		set := old
		if p.Host != nil {
			set.Host = strings.TrimSpace(*p.Host)
		}
		if p.Port != nil {
			set.Port = *p.Port
		}
		if p.Security != nil {
			set.Security = *p.Security
		}
		if p.Auth != nil {
			set.Auth = *p.Auth
		}
		if p.Login != nil {
			set.Login = strings.TrimSpace(*p.Login)
		}
		if p.Password != nil {
			set.Password = *p.Password
		}
		if set.Auth == AuthNone {
			set.Login, set.Password = "", ""
		}
		if err := set.Validate("smtp."); err != nil {
			return SenderView{}, nil, err
		}
		if set.ConnectionChanged(old) {
			r, err := s.check(ctx, c, set, sd.Email, "")
			if err != nil {
				return SenderView{}, nil, err
			}
			rep = &r
			if !r.OK {
				return SenderView{}, rep, checkFailed(r)
			}
			sealed := ""
			if !set.Password.IsZero() {
				if sealed, err = s.box.SealSecret(set.Password, secret.AAD("senders", "smtp_password", sd.ID)); err != nil {
					return SenderView{}, nil, err
				}
			}
			upd["smtp_host"], upd["smtp_port"], upd["smtp_security"] = set.Host, set.Port, string(set.Security)
			upd["smtp_auth"], upd["smtp_login"], upd["smtp_password"], upd["auth_failed"] = string(set.Auth), set.Login, sealed, false
		}
	} else if p.Host != nil || p.Port != nil || p.Security != nil || p.Auth != nil || p.Login != nil || p.Password != nil {
		return SenderView{}, nil, apperr.Invalid("smtp", "not_applicable", "a confirmed-address sender has no SMTP settings")
	}
	if err := s.db.WithContext(ctx).Model(&Sender{}).Where("id = ?", sd.ID).Updates(upd).Error; err != nil {
		return SenderView{}, rep, fmt.Errorf("update sender %d: %w", sd.ID, err)
	}
	s.wakeWorkers()
	v, err = s.GetSender(ctx, c, id)
	return v, rep, err
}

// Confirmation is an address waiting for its mailed code.
type Confirmation struct {
	ID        int64
	UserID    int64
	Email     string
	Name      string
	Shared    bool
	CodeHash  string
	Attempts  int
	ExpiresAt time.Time
	UsedAt    *time.Time
	OutboxID  *int64
	CreatedAt time.Time
}

// TableName maps Confirmation to its table.
func (Confirmation) TableName() string { return "sender_confirmations" }

func hashCode(id int64, code string) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("mailsync sender confirmation %d:%s", id, code)))
	return hex.EncodeToString(sum[:])
}

func newCode() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", fmt.Errorf("generate code: %w", err)
	}
	return fmt.Sprintf("%06d", n.Int64()), nil
}

// StartConfirmation mails a 6-digit code to an address through the
// confirmation account (MAILSYNC_CONFIRMATION_ACCOUNT) and returns the
// confirmation's id. Rate limits: 5 per user per hour, 3 per address per
// day (429 with Retry-After).
func (s *Service) StartConfirmation(ctx context.Context, c Caller, email, name string, shared bool) (int64, error) {
	addr, err := parseBareAddress("email", email)
	if err != nil {
		return 0, err
	}
	name = strings.TrimSpace(name)
	if err := checkHeaderText("name", name); err != nil {
		return 0, err
	}
	if s.cfg.ConfirmationAccount == "" {
		return 0, apperr.New(apperr.ErrUnavailable, "confirmation_unavailable",
			"address confirmation is not set up: an administrator sets MAILSYNC_CONFIRMATION_ACCOUNT")
	}
	relay, ok, err := s.ActiveAccountByEmail(ctx, s.cfg.ConfirmationAccount)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, apperr.New(apperr.ErrUnavailable, "confirmation_unavailable",
			"the confirmation account %s is not an active system SMTP account", s.cfg.ConfirmationAccount)
	}
	now := s.now()
	if err := s.confirmationLimits(ctx, c.UserID, addr, now); err != nil {
		return 0, err
	}
	code, err := newCode()
	if err != nil {
		return 0, err
	}
	conf := Confirmation{UserID: c.UserID, Email: addr, Name: name, Shared: shared, ExpiresAt: now.Add(codeTTL), CreatedAt: now, CodeHash: "pending"}
	lang := i18n.Parse(c.Lang)
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&conf).Error; err != nil {
			return err
		}
		return tx.Model(&Confirmation{}).Where("id = ?", conf.ID).Update("code_hash", hashCode(conf.ID, code)).Error
	})
	if err != nil {
		return 0, fmt.Errorf("store confirmation for %s: %w", addr, err)
	}
	d := Draft{
		From:    relay.Email,
		To:      []string{addr},
		Subject: i18n.T(lang, "confirm.subject"),
		Text:    i18n.T(lang, "confirm.body", addr, code, int(codeTTL.Minutes())),
	}
	rt := Route{Kind: KindSystem, ID: relay.ID, SenderName: relay.SenderName}
	b, err := d.build(s.cfg.MaxMessageBytes, rt, now)
	if err != nil {
		return 0, err
	}
	m, err := s.enqueue(ctx, Caller{UserID: c.UserID, Admin: true}, rt, b, d.Subject, SubmitOptions{}, now)
	if err != nil {
		return 0, err
	}
	if err := s.db.WithContext(ctx).Model(&Confirmation{}).Where("id = ?", conf.ID).Update("outbox_id", m.ID).Error; err != nil {
		return 0, err
	}
	return conf.ID, nil
}

func (s *Service) confirmationLimits(ctx context.Context, userID int64, addr string, now time.Time) error {
	var byUser []time.Time
	if err := s.db.WithContext(ctx).Model(&Confirmation{}).Where("user_id = ? AND created_at > ?", userID, now.Add(-time.Hour)).
		Order("created_at").Pluck("created_at", &byUser).Error; err != nil {
		return fmt.Errorf("count confirmations: %w", err)
	}
	if len(byUser) >= perUserPerHour {
		return &apperr.Error{Kind: apperr.ErrRateLimited, Code: "too_many_confirmations",
			Message:    fmt.Sprintf("at most %d confirmations per hour; try again later", perUserPerHour),
			RetryAfter: byUser[0].Add(time.Hour).Sub(now)}
	}
	var byAddr []time.Time
	if err := s.db.WithContext(ctx).Model(&Confirmation{}).Where("lower(email) = lower(?) AND created_at > ?", addr, now.Add(-24*time.Hour)).
		Order("created_at").Pluck("created_at", &byAddr).Error; err != nil {
		return fmt.Errorf("count confirmations: %w", err)
	}
	if len(byAddr) >= perAddressPerDay {
		return &apperr.Error{Kind: apperr.ErrRateLimited, Code: "too_many_confirmations", Field: "email",
			Message:    fmt.Sprintf("at most %d codes per address per day; try again later", perAddressPerDay),
			RetryAfter: byAddr[0].Add(24 * time.Hour).Sub(now)}
	}
	return nil
}

// Confirm checks a code: single-use, bound to the user and the address,
// compared in constant time, valid 30 minutes, dead after 5 wrong tries. A
// right code creates the sender of kind address.
func (s *Service) Confirm(ctx context.Context, c Caller, id int64, code string) (SenderView, error) {
	var sd Sender
	var wrong error
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var conf Confirmation
		err := tx.Where("id = ? AND user_id = ?", id, c.UserID).Take(&conf).Error
		if store.IsNotFound(err) {
			return apperr.NotFound("confirmation")
		}
		if err != nil {
			return err
		}
		now := s.now()
		switch {
		case conf.UsedAt != nil:
			return apperr.Conflict("code_used", "this code was used already")
		case conf.Attempts >= codeMaxAttempts:
			return apperr.Conflict("code_dead", "too many wrong codes: ask for a new one")
		case !now.Before(conf.ExpiresAt):
			return apperr.Conflict("code_expired", "the code has expired: ask for a new one")
		}
		code = strings.TrimSpace(code)
		if subtle.ConstantTimeCompare([]byte(hashCode(conf.ID, code)), []byte(conf.CodeHash)) != 1 {
			if err := tx.Model(&Confirmation{}).Where("id = ?", conf.ID).Update("attempts", gorm.Expr("attempts + 1")).Error; err != nil {
				return err
			}
			left := codeMaxAttempts - conf.Attempts - 1
			wrong = &apperr.Error{Kind: apperr.ErrUnprocessable, Code: "wrong_code", Field: "code",
				Message: fmt.Sprintf("the code is wrong; %d tries left", left)}
			return nil
		}
		if err := tx.Model(&Confirmation{}).Where("id = ?", conf.ID).Update("used_at", now).Error; err != nil {
			return err
		}
		var existing Sender
		err = tx.Where("user_id = ? AND kind = ? AND lower(email) = lower(?)", c.UserID, KindAddress, conf.Email).Take(&existing).Error
		if err == nil {
			sd = existing
			return tx.Model(&Sender{}).Where("id = ?", existing.ID).Updates(map[string]any{"name": conf.Name, "shared": conf.Shared, "updated_at": now}).Error
		}
		if !store.IsNotFound(err) {
			return err
		}
		sd = Sender{Kind: KindAddress, UserID: c.UserID, Email: conf.Email, Name: conf.Name, Shared: conf.Shared, CreatedAt: now, UpdatedAt: now}
		return tx.Create(&sd).Error
	})
	if err != nil {
		if _, ok := apperr.As(err); ok {
			return SenderView{}, err
		}
		return SenderView{}, fmt.Errorf("confirm %d: %w", id, err)
	}
	if wrong != nil {
		return SenderView{}, wrong
	}
	return s.senderView(c, sd), nil
}

// smtpRouter routes the own-SMTP senders: a message whose From is such a
// sender of the caller's (or a shared one) leaves through its settings.
type smtpRouter struct{ s *Service }

func (smtpRouter) Kind() string { return KindSMTP }

func (r smtpRouter) Route(ctx context.Context, c Caller, from string) (Route, bool, error) {
	sd, ok, err := r.s.findSender(ctx, c, KindSMTP, from)
	if err != nil || !ok {
		return Route{}, false, err
	}
	return Route{Kind: KindSMTP, ID: sd.ID, SenderName: sd.Name}, true, nil
}

func (r smtpRouter) Target(ctx context.Context, id int64) (Target, error) {
	var sd Sender
	err := r.s.db.WithContext(ctx).Where("id = ? AND kind = ?", id, KindSMTP).Take(&sd).Error
	if store.IsNotFound(err) {
		return Target{}, apperr.NotFound("sender")
	}
	if err != nil {
		return Target{}, err
	}
	if sd.AuthFailed {
		return Target{Email: sd.Email}, fmt.Errorf("sender %s: %w", sd.Email, ErrAuthFailed)
	}
	set, err := r.s.senderSettings(sd)
	if err != nil {
		return Target{}, err
	}
	return Target{Settings: set, Email: sd.Email}, nil
}

func (r smtpRouter) AuthFailed(ctx context.Context, id int64) error {
	return r.s.db.WithContext(ctx).Model(&Sender{}).Where("id = ?", id).Update("auth_failed", true).Error
}

// addressRouter routes confirmed addresses through the portal's relay (the
// confirmation account): From is the address, Sender and the envelope are
// the relay's.
type addressRouter struct{ s *Service }

func (addressRouter) Kind() string { return KindAddress }

func (r addressRouter) Route(ctx context.Context, c Caller, from string) (Route, bool, error) {
	sd, ok, err := r.s.findSender(ctx, c, KindAddress, from)
	if err != nil || !ok {
		return Route{}, false, err
	}
	relay, ok, err := r.s.ActiveAccountByEmail(ctx, r.s.cfg.ConfirmationAccount)
	if err != nil {
		return Route{}, false, err
	}
	if !ok || r.s.cfg.ConfirmationAccount == "" {
		return Route{}, false, apperr.New(apperr.ErrUnprocessable, "relay_unavailable",
			"the portal's relay account is not available, so confirmed addresses cannot send")
	}
	return Route{Kind: KindAddress, ID: sd.ID, SenderName: sd.Name, EnvelopeFrom: relay.Email, SenderHeader: relay.Email}, true, nil
}

func (r addressRouter) Target(ctx context.Context, id int64) (Target, error) {
	var sd Sender
	err := r.s.db.WithContext(ctx).Where("id = ? AND kind = ?", id, KindAddress).Take(&sd).Error
	if store.IsNotFound(err) {
		return Target{}, apperr.NotFound("sender")
	}
	if err != nil {
		return Target{}, err
	}
	relay, ok, err := r.s.ActiveAccountByEmail(ctx, r.s.cfg.ConfirmationAccount)
	if err != nil {
		return Target{}, err
	}
	if !ok {
		return Target{}, &apperr.Error{Kind: apperr.ErrNotFound, Code: "relay_unavailable",
			Message: "the portal's relay account is not an active system account"}
	}
	return r.s.AccountTarget(ctx, relay.ID)
}

func (r addressRouter) AuthFailed(ctx context.Context, _ int64) error {
	relay, ok, err := r.s.ActiveAccountByEmail(ctx, r.s.cfg.ConfirmationAccount)
	if err != nil || !ok {
		return err
	}
	return systemRouter(r).AuthFailed(ctx, relay.ID)
}

func (s *Service) findSender(ctx context.Context, c Caller, kind, from string) (Sender, bool, error) {
	var sds []Sender
	err := s.db.WithContext(ctx).Where("kind = ? AND lower(email) = lower(?) AND (user_id = ? OR shared = ?)", kind, from, c.UserID, true).
		Order("id").Find(&sds).Error
	if err != nil {
		return Sender{}, false, fmt.Errorf("route %s: %w", from, err)
	}
	for _, sd := range sds { // the caller's own first
		if sd.UserID == c.UserID {
			return sd, true, nil
		}
	}
	if len(sds) > 0 {
		return sds[0], true, nil
	}
	return Sender{}, false, nil
}

// routeSender resolves an explicit sender_id for a caller: the sender must
// be theirs or shared (403 otherwise).
func (s *Service) routeSender(ctx context.Context, c Caller, id string) (Route, string, string, error) {
	system, n, ok := parseSenderID(id)
	if !ok {
		return Route{}, "", "", apperr.Invalid("sender_id", "invalid_id", "not a sender id")
	}
	forbidden := &apperr.Error{Kind: apperr.ErrForbidden, Code: "sender_not_allowed", Field: "sender_id",
		Message: "you may send only as your own or shared senders"}
	if system {
		a, err := s.GetAccount(ctx, n)
		if errors.Is(err, apperr.ErrNotFound) || (err == nil && !a.Active) {
			return Route{}, "", "", forbidden
		}
		if err != nil {
			return Route{}, "", "", err
		}
		if !c.Admin && !a.SharedWithUsers {
			return Route{}, "", "", forbidden
		}
		return Route{Kind: KindSystem, ID: a.ID, SenderName: a.SenderName}, a.Email, a.SenderName, nil
	}
	var sd Sender
	err := s.db.WithContext(ctx).Where("id = ?", n).Take(&sd).Error
	if store.IsNotFound(err) {
		return Route{}, "", "", forbidden
	}
	if err != nil {
		return Route{}, "", "", err
	}
	if sd.UserID != c.UserID && !sd.Shared {
		return Route{}, "", "", forbidden
	}
	switch sd.Kind {
	case KindSMTP:
		return Route{Kind: KindSMTP, ID: sd.ID, SenderName: sd.Name}, sd.Email, sd.Name, nil
	case KindAddress:
		rt, ok, err := addressRouter{s}.Route(ctx, Caller{UserID: sd.UserID}, sd.Email)
		if err != nil {
			return Route{}, "", "", err
		}
		if !ok {
			return Route{}, "", "", forbidden
		}
		return rt, sd.Email, sd.Name, nil
	case KindMailbox:
		// The mailbox's router decides (it knows whether outgoing is on).
		for _, r := range s.routers {
			if r.Kind() == KindMailbox {
				rt, ok, err := r.Route(ctx, Caller{UserID: sd.UserID}, sd.Email)
				if err != nil {
					return Route{}, "", "", err
				}
				if ok {
					return rt, sd.Email, sd.Name, nil
				}
			}
		}
	}
	return Route{}, "", "", forbidden
}
