package outgoing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"gorm.io/gorm"
)

// Account is a system SMTP account: the admin's strict list of mailboxes the
// site's own mail leaves through.
type Account struct {
	ID              int64
	Active          bool
	SenderName      string
	Email           string
	Host            string
	Port            int
	Security        Security
	Auth            AuthMethod
	Login           string
	Password        string `gorm:"column:password"` // sealed; never leaves this package
	SharedWithUsers bool
	DailyLimit      int
	CheckedAt       *time.Time
	CheckOK         bool
	CheckStep       string
	CheckCode       string
	AuthFailed      bool
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// TableName maps Account to its table.
func (Account) TableName() string { return "smtp_accounts" }

// Settings returns the account's connection settings with the password
// opened.
func (s *Service) accountSettings(a Account) (Settings, error) {
	set := Settings{Host: a.Host, Port: a.Port, Security: a.Security, Auth: a.Auth, Login: a.Login}
	if a.Password != "" {
		pw, err := s.box.Open(a.Password, secret.AAD("smtp_accounts", "password", a.ID))
		if err != nil {
			return Settings{}, fmt.Errorf("open password of SMTP account %d: %w", a.ID, err)
		}
		set.Password = pw
	}
	return set, nil
}

// AccountInput creates or changes an account. On change, nil fields keep
// their value; a nil Password keeps the stored password.
type AccountInput struct {
	Active          *bool
	SenderName      *string
	Email           *string
	Host            *string
	Port            *int
	Security        *Security
	Auth            *AuthMethod
	Login           *string
	Password        *secret.Secret
	SharedWithUsers *bool
	DailyLimit      *int
	// TestRecipient, when set, makes the check send a real test message.
	TestRecipient string
}

// ListAccounts returns every account, in id order.
func (s *Service) ListAccounts(ctx context.Context) ([]Account, error) {
	var as []Account
	if err := s.db.WithContext(ctx).Order("id").Find(&as).Error; err != nil {
		return nil, fmt.Errorf("list SMTP accounts: %w", err)
	}
	return as, nil
}

// GetAccount returns one account.
func (s *Service) GetAccount(ctx context.Context, id int64) (Account, error) {
	var a Account
	err := s.db.WithContext(ctx).Where("id = ?", id).Take(&a).Error
	if store.IsNotFound(err) {
		return Account{}, apperr.NotFound("SMTP account")
	}
	if err != nil {
		return Account{}, fmt.Errorf("read SMTP account %d: %w", id, err)
	}
	return a, nil
}

// CheckFailedError is a refused save: the check report says why.
func checkFailed(r Report) error {
	return &apperr.Error{Kind: apperr.ErrUnprocessable, Code: "check_failed",
		Message: fmt.Sprintf("the SMTP check failed at step %s; nothing was saved", r.Failed), Detail: r}
}

// CreateAccount validates, checks and saves a new account. A failed check
// saves nothing and returns an *apperr.Error whose Detail is the Report.
func (s *Service) CreateAccount(ctx context.Context, c Caller, in AccountInput) (Account, Report, error) {
	a := Account{Active: true, Security: SecuritySTARTTLS, Auth: AuthLogin}
	var pw secret.Secret
	if in.Password != nil {
		pw = *in.Password
	}
	applyAccountInput(&a, in)
	if in.Email == nil {
		return Account{}, Report{}, apperr.Invalid("email", "required", "the sender email is required")
	}
	if err := s.validateAccount(&a, pw, false); err != nil {
		return Account{}, Report{}, err
	}
	set := Settings{Host: a.Host, Port: a.Port, Security: a.Security, Auth: a.Auth, Login: a.Login, Password: pw}
	rep, err := s.check(ctx, c, set, a.Email, in.TestRecipient)
	if err != nil {
		return Account{}, Report{}, err
	}
	if !rep.OK {
		return Account{}, rep, checkFailed(rep)
	}
	now := s.now()
	a.CreatedAt, a.UpdatedAt = now, now
	markChecked(&a, rep, now)
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&a).Error; err != nil {
			return err
		}
		return s.sealAccountPassword(tx, &a, pw)
	})
	s.routes.Clear()
	if err != nil {
		return Account{}, rep, accountWriteError(err, a.Email)
	}
	return a, rep, nil
}

// UpdateAccount changes an account. A change to any connection field runs
// the check first; a failed check changes nothing.
func (s *Service) UpdateAccount(ctx context.Context, c Caller, id int64, in AccountInput) (Account, *Report, error) {
	a, err := s.GetAccount(ctx, id)
	if err != nil {
		return Account{}, nil, err
	}
	old, err := s.accountSettings(a)
	if err != nil {
		return Account{}, nil, err
	}
	oldEmail := a.Email
	applyAccountInput(&a, in)
	pw := old.Password
	if in.Password != nil {
		pw = *in.Password
	}
	if a.Auth == AuthNone {
		pw = ""
		a.Login = ""
	}
	if err := s.validateAccount(&a, pw, true); err != nil {
		return Account{}, nil, err
	}
	set := Settings{Host: a.Host, Port: a.Port, Security: a.Security, Auth: a.Auth, Login: a.Login, Password: pw}
	var rep *Report
	now := s.now()
	if set.ConnectionChanged(old) || !strings.EqualFold(oldEmail, a.Email) || in.TestRecipient != "" {
		r, err := s.check(ctx, c, set, a.Email, in.TestRecipient)
		if err != nil {
			return Account{}, nil, err
		}
		rep = &r
		if !r.OK {
			return Account{}, rep, checkFailed(r)
		}
		markChecked(&a, r, now)
		a.AuthFailed = false
	}
	a.UpdatedAt = now
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Select("*").Omit("created_at").Updates(&a).Error; err != nil {
			return err
		}
		return s.sealAccountPassword(tx, &a, pw)
	})
	s.routes.Clear()
	if err != nil {
		return Account{}, rep, accountWriteError(err, a.Email)
	}
	s.wakeWorkers()
	return a, rep, nil
}

// DeleteAccount removes an account. Messages queued for it fail when their
// turn comes.
func (s *Service) DeleteAccount(ctx context.Context, id int64) error {
	res := s.db.WithContext(ctx).Where("id = ?", id).Delete(&Account{})
	s.routes.Clear()
	if res.Error != nil {
		return fmt.Errorf("delete SMTP account %d: %w", id, res.Error)
	}
	if res.RowsAffected == 0 {
		return apperr.NotFound("SMTP account")
	}
	return nil
}

// CheckSettings checks unsaved settings (the Check button). With base, the
// input changes that stored account (a missing password keeps its
// password); without, the input stands alone.
func (s *Service) CheckSettings(ctx context.Context, c Caller, base *int64, in AccountInput) (Report, error) {
	a := Account{Security: SecuritySTARTTLS, Auth: AuthLogin}
	var pw secret.Secret
	if base != nil {
		stored, err := s.GetAccount(ctx, *base)
		if err != nil {
			return Report{}, err
		}
		set, err := s.accountSettings(stored)
		if err != nil {
			return Report{}, err
		}
		a, pw = stored, set.Password
	}
	applyAccountInput(&a, in)
	if in.Password != nil {
		pw = *in.Password
	}
	if err := s.validateAccount(&a, pw, base != nil); err != nil {
		return Report{}, err
	}
	if in.TestRecipient != "" {
		if _, err := parseBareAddress("test_recipient", in.TestRecipient); err != nil {
			return Report{}, err
		}
	}
	set := Settings{Host: a.Host, Port: a.Port, Security: a.Security, Auth: a.Auth, Login: a.Login, Password: pw}
	return s.check(ctx, c, set, a.Email, in.TestRecipient)
}

// check runs a check a caller asked for, within the abuse limits.
func (s *Service) check(ctx context.Context, c Caller, set Settings, email, testRecipient string) (Report, error) {
	if err := s.LimitCheck(c, set.Host, set.Login); err != nil {
		return Report{}, err
	}
	return s.checkNow(ctx, c, set, email, testRecipient), nil
}

// checkNow runs a check without counting it against the limits.
func (s *Service) checkNow(ctx context.Context, c Caller, set Settings, email, testRecipient string) Report {
	rep := s.checker.Check(ctx, CheckRequest{
		Settings: set, From: email, Rcpt: email, TestRecipient: testRecipient,
		Lang: c.Lang, Timeout: s.cfg.CheckTimeout,
	})
	s.metrics.observeCheck(rep)
	return rep
}

func markChecked(a *Account, r Report, now time.Time) {
	a.CheckedAt = &now
	a.CheckOK = r.OK
	a.CheckStep = string(r.Failed)
	a.CheckCode = ""
	for _, st := range r.Steps {
		if !st.OK {
			a.CheckCode = st.Code
		}
	}
}

func (s *Service) sealAccountPassword(tx *gorm.DB, a *Account, pw secret.Secret) error {
	sealed := ""
	if !pw.IsZero() {
		var err error
		if sealed, err = s.box.SealSecret(pw, secret.AAD("smtp_accounts", "password", a.ID)); err != nil {
			return err
		}
	}
	a.Password = sealed
	return tx.Model(&Account{}).Where("id = ?", a.ID).Update("password", sealed).Error
}

func applyAccountInput(a *Account, in AccountInput) {
	if in.Active != nil {
		a.Active = *in.Active
	}
	if in.SenderName != nil {
		a.SenderName = strings.TrimSpace(*in.SenderName)
	}
	if in.Email != nil {
		a.Email = strings.TrimSpace(*in.Email)
	}
	if in.Host != nil {
		a.Host = strings.TrimSpace(*in.Host)
	}
	if in.Port != nil {
		a.Port = *in.Port
	}
	if in.Security != nil {
		a.Security = *in.Security
	}
	if in.Auth != nil {
		a.Auth = *in.Auth
	}
	if in.Login != nil {
		a.Login = strings.TrimSpace(*in.Login)
	}
	if in.SharedWithUsers != nil {
		a.SharedWithUsers = *in.SharedWithUsers
	}
	if in.DailyLimit != nil {
		a.DailyLimit = *in.DailyLimit
	}
}

func (s *Service) validateAccount(a *Account, pw secret.Secret, _ bool) error {
	email, err := parseBareAddress("email", a.Email)
	if err != nil {
		return err
	}
	a.Email = email
	if err := checkHeaderText("sender_name", a.SenderName); err != nil {
		return err
	}
	if a.DailyLimit < 0 {
		return apperr.Invalid("daily_limit", "invalid_number", "the daily limit cannot be negative (0 means no limit)")
	}
	set := Settings{Host: a.Host, Port: a.Port, Security: a.Security, Auth: a.Auth, Login: a.Login, Password: pw}
	return set.Validate("")
}

func accountWriteError(err error, email string) error {
	if store.IsDuplicate(err) {
		return &apperr.Error{Kind: apperr.ErrConflict, Code: "email_taken", Field: "email",
			Message: fmt.Sprintf("an SMTP account for %s exists already", email)}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("save SMTP account %s: %w", email, err)
}
