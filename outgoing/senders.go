package outgoing

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/ratelimit"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"gorm.io/gorm"
)

// Sender kinds.
const (
	KindMailbox = "mailbox" // mirrored from a mailbox with external SMTP on
	KindSMTP    = "smtp"    // own SMTP server added on the CRM side
	KindAddress = "address" // an address confirmed by a mailed code
)

// Sender is one of the CRM's "From" choices.
type Sender struct {
	ID           int64
	Kind         string
	UserID       int64
	Email        string
	Name         string
	Shared       bool
	MailboxID    *int64
	SMTPHost     string
	SMTPPort     int
	SMTPSecurity Security
	SMTPAuth     AuthMethod
	SMTPLogin    string
	SMTPPassword string // sealed
	AuthFailed   bool
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// TableName maps Sender to its table.
func (Sender) TableName() string { return "senders" }

func (s *Service) senderSettings(sd Sender) (Settings, error) {
	set := Settings{Host: sd.SMTPHost, Port: sd.SMTPPort, Security: sd.SMTPSecurity, Auth: sd.SMTPAuth, Login: sd.SMTPLogin}
	if sd.SMTPPassword != "" {
		pw, err := s.box.Open(sd.SMTPPassword, secret.AAD("senders", "smtp_password", sd.ID))
		if err != nil {
			return Settings{}, fmt.Errorf("open password of sender %d: %w", sd.ID, err)
		}
		set.Password = pw
	}
	return set, nil
}

// CheckSMTP checks settings a caller entered, as a sender with address from:
// through RCPT to that same address, or with testRecipient a real test
// message too. It counts against the caller's abuse limits (429).
func (s *Service) CheckSMTP(ctx context.Context, c Caller, set Settings, from, testRecipient string) (Report, error) {
	return s.check(ctx, c, set, from, testRecipient)
}

// CheckSMTPStatus re-checks saved settings for a status display. It is not
// rate-limited: its callers bound it themselves (the mailbox settings view
// shares one check per mailbox and reuses it for a TTL).
func (s *Service) CheckSMTPStatus(ctx context.Context, c Caller, set Settings, from string) Report {
	return s.checkNow(ctx, c, set, from, "")
}

// LimitCheck counts one check or connect a caller triggers against the
// abuse limits: 10 a minute per user, 30 a minute per mail server, 5 a
// minute per (server, login). It returns a 429 error when a limit is full.
func (s *Service) LimitCheck(c Caller, host, login string) error {
	host = strings.ToLower(host)
	return s.limiter.Allow(
		ratelimit.Rule{Key: fmt.Sprintf("user:%d", c.UserID), Limit: 10, Per: time.Minute, What: "checks and connects per user"},
		ratelimit.Rule{Key: "host:" + host, Limit: 30, Per: time.Minute, What: "checks of this server"},
		ratelimit.Rule{Key: "login:" + host + "\x00" + strings.ToLower(login), Limit: 5, Per: time.Minute, What: "checks of this login on this server"},
	)
}

// PutMailboxSender creates or updates the sender mirrored from a mailbox,
// inside the caller's transaction.
func (s *Service) PutMailboxSender(tx *gorm.DB, userID, mailboxID int64, email, name string) error {
	now := s.now()
	var existing Sender
	err := tx.Where("mailbox_id = ?", mailboxID).Take(&existing).Error
	switch {
	case store.IsNotFound(err):
		mb := mailboxID
		sd := Sender{Kind: KindMailbox, UserID: userID, Email: email, Name: name, MailboxID: &mb, CreatedAt: now, UpdatedAt: now}
		if err := tx.Create(&sd).Error; err != nil {
			if store.IsDuplicate(err) {
				return apperr.Conflict("sender_exists", "you have a mailbox sender for %s already", email)
			}
			return fmt.Errorf("create mailbox sender: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read mailbox sender: %w", err)
	}
	return tx.Model(&Sender{}).Where("id = ?", existing.ID).
		Updates(map[string]any{"email": email, "name": name, "auth_failed": false, "updated_at": now}).Error
}

// RemoveMailboxSender removes, inside the caller's transaction, the sender
// mirrored from a mailbox.
func (s *Service) RemoveMailboxSender(tx *gorm.DB, mailboxID int64) error {
	if err := tx.Where("mailbox_id = ?", mailboxID).Delete(&Sender{}).Error; err != nil {
		return fmt.Errorf("remove mailbox sender: %w", err)
	}
	return nil
}

// RemoveOwnSMTPSender removes, inside the caller's transaction, a user's
// own-SMTP sender for an address: turning a mailbox's external SMTP off
// removes the same-address CRM SMTP account too (the portal's documented
// behaviour).
func (s *Service) RemoveOwnSMTPSender(tx *gorm.DB, userID int64, email string) error {
	if err := tx.Where("user_id = ? AND kind = ? AND lower(email) = lower(?)", userID, KindSMTP, email).
		Delete(&Sender{}).Error; err != nil {
		return fmt.Errorf("remove own-SMTP sender %s: %w", email, err)
	}
	return nil
}

// OwnSMTPSender returns the user's own-SMTP sender for an address and its
// settings, if there is one.
func (s *Service) OwnSMTPSender(ctx context.Context, userID int64, email string) (Sender, Settings, bool, error) {
	var sd Sender
	err := s.db.WithContext(ctx).Where("user_id = ? AND kind = ? AND lower(email) = lower(?)", userID, KindSMTP, email).Take(&sd).Error
	if store.IsNotFound(err) {
		return Sender{}, Settings{}, false, nil
	}
	if err != nil {
		return Sender{}, Settings{}, false, fmt.Errorf("read own-SMTP sender %s: %w", email, err)
	}
	set, err := s.senderSettings(sd)
	return sd, set, err == nil, err
}

// ActiveAccountByEmail returns the active system account with that address.
func (s *Service) ActiveAccountByEmail(ctx context.Context, email string) (Account, bool, error) {
	var a Account
	err := s.db.WithContext(ctx).Where("lower(email) = lower(?) AND active = ?", email, true).Take(&a).Error
	if store.IsNotFound(err) {
		return Account{}, false, nil
	}
	if err != nil {
		return Account{}, false, fmt.Errorf("read system account %s: %w", email, err)
	}
	return a, true, nil
}

// AccountTarget returns what sending through a system account needs.
func (s *Service) AccountTarget(ctx context.Context, id int64) (Target, error) {
	return systemRouter{s}.Target(ctx, id)
}

// SMTPSenderInput creates an own-SMTP sender.
type SMTPSenderInput struct {
	Email    string
	Name     string
	Shared   bool
	Settings Settings
}

// CreateSMTPSender checks the settings with the address as sender and, on
// success only, saves the sender.
func (s *Service) CreateSMTPSender(ctx context.Context, c Caller, in SMTPSenderInput) (Sender, Report, error) {
	email, err := parseBareAddress("email", in.Email)
	if err != nil {
		return Sender{}, Report{}, err
	}
	name := strings.TrimSpace(in.Name)
	if err := checkHeaderText("name", name); err != nil {
		return Sender{}, Report{}, err
	}
	if err := in.Settings.Validate("smtp."); err != nil {
		return Sender{}, Report{}, err
	}
	rep, err := s.check(ctx, c, in.Settings, email, "")
	if err != nil {
		return Sender{}, Report{}, err
	}
	if !rep.OK {
		return Sender{}, rep, checkFailed(rep)
	}
	now := s.now()
	sd := Sender{
		Kind: KindSMTP, UserID: c.UserID, Email: email, Name: name, Shared: in.Shared,
		SMTPHost: in.Settings.Host, SMTPPort: in.Settings.Port, SMTPSecurity: in.Settings.Security,
		SMTPAuth: in.Settings.Auth, SMTPLogin: in.Settings.Login, CreatedAt: now, UpdatedAt: now,
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&sd).Error; err != nil {
			return err
		}
		sealed := ""
		if !in.Settings.Password.IsZero() {
			if sealed, err = s.box.SealSecret(in.Settings.Password, secret.AAD("senders", "smtp_password", sd.ID)); err != nil {
				return err
			}
		}
		sd.SMTPPassword = sealed
		return tx.Model(&Sender{}).Where("id = ?", sd.ID).Update("smtp_password", sealed).Error
	})
	if err != nil {
		if store.IsDuplicate(err) {
			return Sender{}, rep, &apperr.Error{Kind: apperr.ErrConflict, Code: "sender_exists", Field: "email",
				Message: fmt.Sprintf("you have an own-SMTP sender for %s already", email)}
		}
		return Sender{}, rep, fmt.Errorf("save sender %s: %w", email, err)
	}
	return sd, rep, nil
}

// ListSenders returns the senders a caller may use: their own and shared
// ones (an admin: all).
func (s *Service) ListSenders(ctx context.Context, c Caller) ([]Sender, error) {
	q := s.db.WithContext(ctx).Order("id")
	if !c.Admin {
		q = q.Where("user_id = ? OR shared = ?", c.UserID, true)
	}
	var out []Sender
	if err := q.Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list senders: %w", err)
	}
	return out, nil
}
