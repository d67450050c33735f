package mailbox

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/outgoing"
	"gorm.io/gorm"
)

// Mailbox is a connected mailbox with its outgoing block.
type Mailbox struct {
	ID           int64
	UserID       int64
	Email        string
	Name         string
	Provider     string
	IMAPHost     string            `gorm:"column:imap_host"`
	IMAPPort     int               `gorm:"column:imap_port"`
	IMAPSecurity outgoing.Security `gorm:"column:imap_security"`
	IMAPLogin    string            `gorm:"column:imap_login"`
	IMAPPassword string            `gorm:"column:imap_password"` // sealed

	OutEnabled   bool
	OutSaveCopy  bool
	OutSource    string // preset, system, sender, manual
	OutAccountID *int64
	SMTPHost     string              `gorm:"column:smtp_host"`
	SMTPPort     int                 `gorm:"column:smtp_port"`
	SMTPSecurity outgoing.Security   `gorm:"column:smtp_security"`
	SMTPAuth     outgoing.AuthMethod `gorm:"column:smtp_auth"`
	SMTPLogin    string              `gorm:"column:smtp_login"`
	SMTPPassword string              `gorm:"column:smtp_password"` // sealed

	SyncState       string
	LastSyncAt      *time.Time
	LastSyncOK      bool
	LastError       string
	AuthFailed      bool
	SettingsVersion int
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// TableName maps Mailbox to its table.
func (Mailbox) TableName() string { return "mailboxes" }

// FolderRow is a folder of a mailbox as stored.
type FolderRow struct {
	ID            int64
	MailboxID     int64
	Name          string
	Delimiter     string
	SpecialUse    string
	NoSelect      bool
	Selected      bool
	UIDValidity   uint32 `gorm:"column:uidvalidity"`
	UIDNext       uint32 `gorm:"column:uidnext"`
	HighestModseq uint64 `gorm:"column:highest_modseq"`
	Total         int
	Synced        int
	LastSyncAt    *time.Time
	CreatedAt     time.Time
}

// TableName maps FolderRow to its table.
func (FolderRow) TableName() string { return "mailbox_folders" }

// Outgoing sources.
const (
	SourcePreset = "preset"
	SourceSystem = "system"
	SourceSender = "sender"
	SourceManual = "manual"
)

// Config tunes the mailbox service.
type Config struct {
	CheckTimeout      time.Duration // IMAP and SMTP checks (15 s)
	OutgoingStatusTTL time.Duration // reuse of a settings-view check (30 s)
}

// Service manages mailboxes.
type Service struct {
	db     *store.DB
	box    *secret.Box
	imap   *IMAPNetwork
	out    *outgoing.Service
	lookup *Lookup
	cfg    Config
	log    *slog.Logger
	now    func() time.Time

	statusMu sync.Mutex
	status   map[int64]*statusEntry

	deleteHooks []func(tx *gorm.DB, mailboxID int64) error

	// OnChange, when set, is told that a mailbox's sync settings changed
	// (connected, folders chosen, IMAP settings changed, deleted), so the
	// sync engine can react at once.
	OnChange func(mailboxID int64)
}

// Deps are what the service needs.
type Deps struct {
	DB       *store.DB
	Box      *secret.Box
	IMAP     *IMAPNetwork
	Outgoing *outgoing.Service
	Lookup   *Lookup
	Logger   *slog.Logger
	Now      func() time.Time
}

// NewService builds the service and registers the mailbox sender kind with
// the outgoing routing.
func NewService(d Deps, cfg Config) *Service {
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 15 * time.Second
	}
	if cfg.OutgoingStatusTTL <= 0 {
		cfg.OutgoingStatusTTL = 30 * time.Second
	}
	s := &Service{
		db: d.DB, box: d.Box, imap: d.IMAP, out: d.Outgoing, lookup: d.Lookup, cfg: cfg, log: d.Logger,
		now: d.Now, status: map[int64]*statusEntry{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = func() time.Time { return time.Now().UTC() }
	}
	if s.lookup == nil {
		s.lookup = &Lookup{}
	}
	d.Outgoing.AddRouter(mailboxRouter{s})
	return s
}

func (s *Service) changed(id int64) {
	if s.OnChange != nil {
		s.OnChange(id)
	}
}

// IMAPSettingsOf returns a mailbox's IMAP settings with the password opened.
func (s *Service) IMAPSettingsOf(mb Mailbox) (IMAPSettings, error) {
	pw, err := s.box.Open(mb.IMAPPassword, secret.AAD("mailboxes", "imap_password", mb.ID))
	if err != nil {
		return IMAPSettings{}, fmt.Errorf("open IMAP password of mailbox %d: %w", mb.ID, err)
	}
	return IMAPSettings{Host: mb.IMAPHost, Port: mb.IMAPPort, Security: mb.IMAPSecurity, Login: mb.IMAPLogin, Password: pw}, nil
}

// IMAP returns the IMAP network the service dials with.
func (s *Service) IMAP() *IMAPNetwork { return s.imap }

// ConnectInput connects a mailbox: either a preset provider or manual IMAP.
type ConnectInput struct {
	Email    string
	Name     string
	Password secret.Secret
	Provider string        // a preset id; "" with IMAP
	IMAP     *IMAPEndpoint // manual settings
}

// IMAPEndpoint is hand-entered IMAP settings.
type IMAPEndpoint struct {
	Host     string
	Port     int
	Security outgoing.Security
	Login    string
}

// Connect checks IMAP before anything is saved, then saves the mailbox with
// its folders (INBOX and Sent selected). A failed check saves nothing and
// returns an *apperr.Error (422) whose Detail is the check result.
func (s *Service) Connect(ctx context.Context, c outgoing.Caller, in ConnectInput) (Mailbox, IMAPCheckResult, error) {
	email, err := bareAddress("email", in.Email)
	if err != nil {
		return Mailbox{}, IMAPCheckResult{}, err
	}
	if in.Password.IsZero() {
		return Mailbox{}, IMAPCheckResult{}, apperr.Invalid("password", "required", "the mailbox password is required")
	}
	name := strings.TrimSpace(in.Name)
	if strings.ContainsAny(name, "\r\n\x00") {
		return Mailbox{}, IMAPCheckResult{}, apperr.Invalid("name", "header_injection", "the name must be one line")
	}
	var (
		set      IMAPSettings
		provider Provider
	)
	switch {
	case in.Provider != "" && in.IMAP != nil:
		return Mailbox{}, IMAPCheckResult{}, apperr.Invalid("imap", "ambiguous", "give either provider or imap, not both")
	case in.Provider != "":
		p, ok := ProviderByID(in.Provider)
		if !ok {
			return Mailbox{}, IMAPCheckResult{}, apperr.Invalid("provider", "unknown_provider", "no provider preset %q (see GET /api/v1/providers)", in.Provider)
		}
		provider = p
		set = IMAPSettings{Host: p.IMAP.Host, Port: p.IMAP.Port, Security: p.IMAP.Security, Login: p.LoginFor(email), Password: in.Password}
	case in.IMAP != nil:
		login := in.IMAP.Login
		if login == "" {
			login = email
		}
		set = IMAPSettings{Host: in.IMAP.Host, Port: in.IMAP.Port, Security: in.IMAP.Security, Login: login, Password: in.Password}
	default:
		return Mailbox{}, IMAPCheckResult{}, apperr.Invalid("provider", "required", "give a provider preset or imap settings")
	}
	if err := set.Validate("imap."); err != nil {
		return Mailbox{}, IMAPCheckResult{}, err
	}
	var dup int64
	if err := s.db.WithContext(ctx).Model(&Mailbox{}).Where("user_id = ? AND lower(email) = lower(?)", c.UserID, email).Count(&dup).Error; err != nil {
		return Mailbox{}, IMAPCheckResult{}, fmt.Errorf("look for the mailbox: %w", err)
	}
	if dup > 0 {
		return Mailbox{}, IMAPCheckResult{}, mailboxTaken(email)
	}
	if err := s.out.LimitCheck(c, set.Host, set.Login); err != nil {
		return Mailbox{}, IMAPCheckResult{}, err
	}
	res := s.imap.Check(ctx, set, c.Lang, s.cfg.CheckTimeout)
	if !res.Report.OK {
		return Mailbox{}, res, &apperr.Error{Kind: apperr.ErrUnprocessable, Code: "check_failed",
			Message: fmt.Sprintf("the IMAP check failed at step %s; nothing was saved", res.Report.Failed), Detail: res}
	}
	now := s.now()
	mb := Mailbox{
		UserID: c.UserID, Email: email, Name: name, Provider: provider.ID,
		IMAPHost: set.Host, IMAPPort: set.Port, IMAPSecurity: set.Security, IMAPLogin: set.Login,
		SyncState: "pending", SettingsVersion: 1, CreatedAt: now, UpdatedAt: now,
	}
	selected := map[string]bool{}
	for _, f := range DefaultSyncFolders(res.Folders, provider.SentFolder) {
		selected[f] = true
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&mb).Error; err != nil {
			return err
		}
		sealed, err := s.box.SealSecret(set.Password, secret.AAD("mailboxes", "imap_password", mb.ID))
		if err != nil {
			return err
		}
		mb.IMAPPassword = sealed
		if err := tx.Model(&Mailbox{}).Where("id = ?", mb.ID).Update("imap_password", sealed).Error; err != nil {
			return err
		}
		return saveFolders(tx, mb.ID, res.Folders, selected, now)
	})
	if err != nil {
		if store.IsDuplicate(err) {
			return Mailbox{}, res, mailboxTaken(email)
		}
		return Mailbox{}, res, fmt.Errorf("save mailbox %s: %w", email, err)
	}
	s.changed(mb.ID)
	return mb, res, nil
}

func mailboxTaken(email string) error {
	return &apperr.Error{Kind: apperr.ErrConflict, Code: "mailbox_exists", Field: "email",
		Message: fmt.Sprintf("you have connected %s already", email)}
}

func saveFolders(tx *gorm.DB, mailboxID int64, folders []Folder, selected map[string]bool, now time.Time) error {
	for _, f := range folders {
		row := FolderRow{MailboxID: mailboxID, Name: f.Name, Delimiter: f.Delimiter, SpecialUse: f.SpecialUse,
			NoSelect: f.NoSelect, Selected: selected[f.Name] && !f.NoSelect, CreatedAt: now}
		if err := tx.Create(&row).Error; err != nil {
			return fmt.Errorf("save folder %q: %w", f.Name, err)
		}
	}
	return nil
}

// visible narrows a query to the mailboxes a caller may see.
func visible(q *gorm.DB, c outgoing.Caller) *gorm.DB {
	if c.Admin {
		return q
	}
	return q.Where("user_id = ?", c.UserID)
}

// List returns the caller's mailboxes (an admin's: all).
func (s *Service) List(ctx context.Context, c outgoing.Caller) ([]Mailbox, error) {
	var out []Mailbox
	if err := visible(s.db.WithContext(ctx), c).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list mailboxes: %w", err)
	}
	return out, nil
}

// Get returns a mailbox of the caller's; anyone else's answers as missing.
func (s *Service) Get(ctx context.Context, c outgoing.Caller, id int64) (Mailbox, error) {
	var mb Mailbox
	err := visible(s.db.WithContext(ctx), c).Where("id = ?", id).Take(&mb).Error
	if store.IsNotFound(err) {
		return Mailbox{}, apperr.NotFound("mailbox")
	}
	if err != nil {
		return Mailbox{}, fmt.Errorf("read mailbox %d: %w", id, err)
	}
	return mb, nil
}

// ByID returns any mailbox, for the sync engine.
func (s *Service) ByID(ctx context.Context, id int64) (Mailbox, error) {
	return s.Get(ctx, outgoing.Caller{Admin: true}, id)
}

// UpdateInput changes a mailbox's name or IMAP settings; nil keeps.
type UpdateInput struct {
	Name     *string
	Password *secret.Secret
	IMAP     *IMAPEndpoint
}

// Update changes a mailbox. A change to the IMAP connection is checked first;
// a failed check changes nothing.
func (s *Service) Update(ctx context.Context, c outgoing.Caller, id int64, in UpdateInput) (Mailbox, *IMAPCheckResult, error) {
	mb, err := s.Get(ctx, c, id)
	if err != nil {
		return Mailbox{}, nil, err
	}
	if in.Name != nil {
		name := strings.TrimSpace(*in.Name)
		if strings.ContainsAny(name, "\r\n\x00") {
			return Mailbox{}, nil, apperr.Invalid("name", "header_injection", "the name must be one line")
		}
		mb.Name = name
	}
	var res *IMAPCheckResult
	if in.Password != nil || in.IMAP != nil {
		set, err := s.IMAPSettingsOf(mb)
		if err != nil {
			return Mailbox{}, nil, err
		}
		if in.IMAP != nil {
			set.Host, set.Port, set.Security = in.IMAP.Host, in.IMAP.Port, in.IMAP.Security
			if in.IMAP.Login != "" {
				set.Login = in.IMAP.Login
			}
		}
		if in.Password != nil {
			set.Password = *in.Password
		}
		if err := set.Validate("imap."); err != nil {
			return Mailbox{}, nil, err
		}
		if err := s.out.LimitCheck(c, set.Host, set.Login); err != nil {
			return Mailbox{}, nil, err
		}
		r := s.imap.Check(ctx, set, c.Lang, s.cfg.CheckTimeout)
		res = &r
		if !r.Report.OK {
			return Mailbox{}, res, &apperr.Error{Kind: apperr.ErrUnprocessable, Code: "check_failed",
				Message: fmt.Sprintf("the IMAP check failed at step %s; nothing was changed", r.Report.Failed), Detail: r}
		}
		sealed, err := s.box.SealSecret(set.Password, secret.AAD("mailboxes", "imap_password", mb.ID))
		if err != nil {
			return Mailbox{}, nil, err
		}
		mb.IMAPHost, mb.IMAPPort, mb.IMAPSecurity, mb.IMAPLogin, mb.IMAPPassword = set.Host, set.Port, set.Security, set.Login, sealed
		mb.AuthFailed = false
		mb.SettingsVersion++
	}
	mb.UpdatedAt = s.now()
	if err := s.db.WithContext(ctx).Select("*").Omit("created_at").Updates(&mb).Error; err != nil {
		return Mailbox{}, res, fmt.Errorf("update mailbox %d: %w", id, err)
	}
	if res != nil {
		s.changed(mb.ID)
	}
	return mb, res, nil
}

// Delete disconnects a mailbox: the mailbox, its folders, its synced mail
// and its mirrored sender go in one transaction.
func (s *Service) Delete(ctx context.Context, c outgoing.Caller, id int64) error {
	mb, err := s.Get(ctx, c, id)
	if err != nil {
		return err
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := s.out.RemoveMailboxSender(tx, mb.ID); err != nil {
			return err
		}
		for _, hook := range s.deleteHooks {
			if err := hook(tx, mb.ID); err != nil {
				return err
			}
		}
		if err := tx.Where("mailbox_id = ?", mb.ID).Delete(&FolderRow{}).Error; err != nil {
			return err
		}
		return tx.Where("id = ?", mb.ID).Delete(&Mailbox{}).Error
	})
	if err != nil {
		return fmt.Errorf("delete mailbox %d: %w", id, err)
	}
	s.forgetStatus(mb.ID)
	s.changed(mb.ID)
	return nil
}

// Folders returns a mailbox's folders.
func (s *Service) Folders(ctx context.Context, c outgoing.Caller, id int64) ([]FolderRow, error) {
	if _, err := s.Get(ctx, c, id); err != nil {
		return nil, err
	}
	var out []FolderRow
	if err := s.db.WithContext(ctx).Where("mailbox_id = ?", id).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list folders of mailbox %d: %w", id, err)
	}
	return out, nil
}

// SetFolders chooses the folders to sync; names must be folders LIST found
// and selectable.
func (s *Service) SetFolders(ctx context.Context, c outgoing.Caller, id int64, names []string) ([]FolderRow, error) {
	folders, err := s.Folders(ctx, c, id)
	if err != nil {
		return nil, err
	}
	byName := map[string]FolderRow{}
	for _, f := range folders {
		byName[f.Name] = f
	}
	want := map[string]bool{}
	for i, n := range names {
		f, ok := byName[n]
		if !ok {
			return nil, apperr.Invalid(fmt.Sprintf("folders[%d]", i), "unknown_folder", "the mailbox has no folder %q", n)
		}
		if f.NoSelect {
			return nil, apperr.Invalid(fmt.Sprintf("folders[%d]", i), "not_selectable", "the folder %q cannot hold messages", n)
		}
		want[n] = true
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for _, f := range folders {
			if f.Selected != want[f.Name] {
				if err := tx.Model(&FolderRow{}).Where("id = ?", f.ID).Update("selected", want[f.Name]).Error; err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("choose folders of mailbox %d: %w", id, err)
	}
	s.changed(id)
	return s.Folders(ctx, c, id)
}

// OnDelete registers a hook run inside the transaction that deletes a
// mailbox (the sync engine removes its messages there).
func (s *Service) OnDelete(hook func(tx *gorm.DB, mailboxID int64) error) {
	s.deleteHooks = append(s.deleteHooks, hook)
}

func bareAddress(field, v string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", apperr.Invalid(field, "required", "an email address is required")
	}
	if strings.ContainsAny(v, "\r\n\x00<>, \"") || strings.Count(v, "@") != 1 || strings.HasPrefix(v, "@") || strings.HasSuffix(v, "@") {
		return "", apperr.Invalid(field, "invalid_email", "%q is not a valid email address", v)
	}
	return v, nil
}
