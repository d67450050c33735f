package api

import (
	"context"
	"net/http"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/mailbox"
	"github.com/mailsync/mailsync/outgoing"
)

// Mailboxes is what the API needs of the mailbox service.
type Mailboxes interface {
	Connect(ctx context.Context, c outgoing.Caller, in mailbox.ConnectInput) (mailbox.Mailbox, mailbox.IMAPCheckResult, error)
	List(ctx context.Context, c outgoing.Caller) ([]mailbox.Mailbox, error)
	Get(ctx context.Context, c outgoing.Caller, id int64) (mailbox.Mailbox, error)
	Update(ctx context.Context, c outgoing.Caller, id int64, in mailbox.UpdateInput) (mailbox.Mailbox, *mailbox.IMAPCheckResult, error)
	Delete(ctx context.Context, c outgoing.Caller, id int64) error
	Folders(ctx context.Context, c outgoing.Caller, id int64) ([]mailbox.FolderRow, error)
	SetFolders(ctx context.Context, c outgoing.Caller, id int64, names []string) ([]mailbox.FolderRow, error)
	SetOutgoing(ctx context.Context, c outgoing.Caller, id int64, in mailbox.OutgoingInput) (mailbox.Mailbox, *outgoing.Report, error)
	CheckOutgoing(ctx context.Context, c outgoing.Caller, id int64, in *mailbox.SMTPInput) (outgoing.Report, error)
	Settings(ctx context.Context, c outgoing.Caller, id int64) (mailbox.SettingsView, error)
}

// ProviderLookup finds a provider preset for an address.
type ProviderLookup interface {
	Find(ctx context.Context, email string) (p mailbox.Provider, via string, ok bool, err error)
}

type endpointJSON struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Security string `json:"security"`
	Login    string `json:"login,omitempty"`
}

type mailboxJSON struct {
	ID       int64        `json:"id"`
	Owner    int64        `json:"owner"`
	Email    string       `json:"email"`
	Name     string       `json:"name"`
	Provider string       `json:"provider,omitempty"`
	IMAP     endpointJSON `json:"imap"`
	Outgoing struct {
		Enabled  bool   `json:"enabled"`
		SaveCopy bool   `json:"save_copy"`
		Source   string `json:"source,omitempty"`
	} `json:"outgoing"`
	Sync struct {
		State      string     `json:"state"`
		LastSyncAt *time.Time `json:"last_sync_at"`
		LastSyncOK bool       `json:"last_sync_ok"`
		LastError  string     `json:"last_error,omitempty"`
		AuthFailed bool       `json:"auth_failed"`
	} `json:"sync"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func toMailboxJSON(mb mailbox.Mailbox) mailboxJSON {
	j := mailboxJSON{ID: mb.ID, Owner: mb.UserID, Email: mb.Email, Name: mb.Name, Provider: mb.Provider,
		IMAP:      endpointJSON{Host: mb.IMAPHost, Port: mb.IMAPPort, Security: string(mb.IMAPSecurity), Login: mb.IMAPLogin},
		CreatedAt: mb.CreatedAt, UpdatedAt: mb.UpdatedAt}
	j.Outgoing.Enabled, j.Outgoing.SaveCopy = mb.OutEnabled, mb.OutSaveCopy
	if mb.OutEnabled {
		j.Outgoing.Source = mb.OutSource
	}
	j.Sync.State, j.Sync.LastSyncAt, j.Sync.LastSyncOK, j.Sync.LastError, j.Sync.AuthFailed =
		mb.SyncState, mb.LastSyncAt, mb.LastSyncOK, mb.LastError, mb.AuthFailed
	return j
}

func (s *Server) listProviders(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"providers": mailbox.Providers()})
	return nil
}

func (s *Server) lookupProvider(w http.ResponseWriter, r *http.Request) error {
	p, via, ok, err := s.deps.ProviderLookup.Find(r.Context(), r.URL.Query().Get("email"))
	if err != nil {
		return err
	}
	if !ok {
		return apperr.New(apperr.ErrNotFound, "no_provider", "no preset matches this address; enter the IMAP settings by hand")
	}
	writeJSON(w, http.StatusOK, map[string]any{"provider": p, "matched_by": via})
	return nil
}

type imapIn struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Security string `json:"security"`
	Login    string `json:"login"`
}

func (in *imapIn) endpoint() *mailbox.IMAPEndpoint {
	if in == nil {
		return nil
	}
	return &mailbox.IMAPEndpoint{Host: in.Host, Port: in.Port, Security: outgoing.Security(in.Security), Login: in.Login}
}

type connectIn struct {
	Email    string        `json:"email"`
	Name     string        `json:"name"`
	Password secret.Secret `json:"password"`
	Provider string        `json:"provider"`
	IMAP     *imapIn       `json:"imap"`
}

func (s *Server) connectMailbox(w http.ResponseWriter, r *http.Request) error {
	var in connectIn
	if err := decodeJSON(w, r, &in, 0); err != nil {
		return err
	}
	mb, res, err := s.deps.Mailboxes.Connect(r.Context(), outgoingCaller(r), mailbox.ConnectInput{
		Email: in.Email, Name: in.Name, Password: in.Password, Provider: in.Provider, IMAP: in.IMAP.endpoint(),
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"mailbox": toMailboxJSON(mb), "check": res})
	return nil
}

func (s *Server) listMailboxes(w http.ResponseWriter, r *http.Request) error {
	list, err := s.deps.Mailboxes.List(r.Context(), outgoingCaller(r))
	if err != nil {
		return err
	}
	out := make([]mailboxJSON, 0, len(list))
	for _, mb := range list {
		out = append(out, toMailboxJSON(mb))
	}
	writeJSON(w, http.StatusOK, map[string]any{"mailboxes": out})
	return nil
}

func (s *Server) getMailbox(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	mb, err := s.deps.Mailboxes.Get(r.Context(), outgoingCaller(r), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toMailboxJSON(mb))
	return nil
}

type mailboxPatchIn struct {
	Name     *string        `json:"name"`
	Password *secret.Secret `json:"password"`
	IMAP     *imapIn        `json:"imap"`
}

func (s *Server) updateMailbox(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var in mailboxPatchIn
	if err := decodeJSON(w, r, &in, 0); err != nil {
		return err
	}
	mb, res, err := s.deps.Mailboxes.Update(r.Context(), outgoingCaller(r), id, mailbox.UpdateInput{
		Name: in.Name, Password: in.Password, IMAP: in.IMAP.endpoint(),
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"mailbox": toMailboxJSON(mb), "check": res})
	return nil
}

func (s *Server) deleteMailbox(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := s.deps.Mailboxes.Delete(r.Context(), outgoingCaller(r), id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type folderJSON struct {
	Name          string     `json:"name"`
	Delimiter     string     `json:"delimiter,omitempty"`
	SpecialUse    string     `json:"special_use,omitempty"`
	NoSelect      bool       `json:"no_select"`
	Selected      bool       `json:"selected"`
	Total         int        `json:"total"`
	Synced        int        `json:"synced"`
	UIDValidity   uint32     `json:"uidvalidity,omitempty"`
	UIDNext       uint32     `json:"uidnext,omitempty"`
	HighestModseq uint64     `json:"highest_modseq,omitempty"`
	LastSyncAt    *time.Time `json:"last_sync_at"`
}

func writeFolders(w http.ResponseWriter, folders []mailbox.FolderRow) {
	out := make([]folderJSON, 0, len(folders))
	for _, f := range folders {
		out = append(out, folderJSON{Name: f.Name, Delimiter: f.Delimiter, SpecialUse: f.SpecialUse, NoSelect: f.NoSelect,
			Selected: f.Selected, Total: f.Total, Synced: f.Synced, UIDValidity: f.UIDValidity, UIDNext: f.UIDNext,
			HighestModseq: f.HighestModseq, LastSyncAt: f.LastSyncAt})
	}
	writeJSON(w, http.StatusOK, map[string]any{"folders": out})
}

func (s *Server) listFolders(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	folders, err := s.deps.Mailboxes.Folders(r.Context(), outgoingCaller(r), id)
	if err != nil {
		return err
	}
	writeFolders(w, folders)
	return nil
}

func (s *Server) setFolders(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var in struct {
		Folders []string `json:"folders"`
	}
	if err := decodeJSON(w, r, &in, 0); err != nil {
		return err
	}
	folders, err := s.deps.Mailboxes.SetFolders(r.Context(), outgoingCaller(r), id, in.Folders)
	if err != nil {
		return err
	}
	writeFolders(w, folders)
	return nil
}

type smtpIn struct {
	Host     string         `json:"host"`
	Port     int            `json:"port"`
	Security string         `json:"security"`
	Auth     string         `json:"auth"`
	Login    string         `json:"login"`
	Password *secret.Secret `json:"password"`
}

func (in *smtpIn) input() *mailbox.SMTPInput {
	if in == nil {
		return nil
	}
	return &mailbox.SMTPInput{Host: in.Host, Port: in.Port, Security: outgoing.Security(in.Security),
		Auth: outgoing.AuthMethod(in.Auth), Login: in.Login, Password: in.Password}
}

type outgoingIn struct {
	Enabled  *bool   `json:"enabled"`
	SaveCopy bool    `json:"save_copy"`
	SMTP     *smtpIn `json:"smtp"`
}

func (s *Server) setOutgoing(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var in outgoingIn
	if err := decodeJSON(w, r, &in, 0); err != nil {
		return err
	}
	if in.Enabled == nil {
		return apperr.Invalid("enabled", "required", "say whether external SMTP is on (true or false)")
	}
	mb, rep, err := s.deps.Mailboxes.SetOutgoing(r.Context(), outgoingCaller(r), id, mailbox.OutgoingInput{
		Enabled: *in.Enabled, SaveCopy: in.SaveCopy, SMTP: in.SMTP.input(),
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"mailbox": toMailboxJSON(mb), "check": rep})
	return nil
}

func (s *Server) checkOutgoing(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var in struct {
		SMTP *smtpIn `json:"smtp"`
	}
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, &in, 0); err != nil {
			return err
		}
	}
	rep, err := s.deps.Mailboxes.CheckOutgoing(r.Context(), outgoingCaller(r), id, in.SMTP.input())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

type smtpViewJSON struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Security string `json:"security"`
	Auth     string `json:"auth"`
	Login    string `json:"login"`
}

func smtpView(set *outgoing.Settings) *smtpViewJSON {
	if set == nil {
		return nil
	}
	return &smtpViewJSON{Host: set.Host, Port: set.Port, Security: string(set.Security), Auth: string(set.Auth), Login: set.Login}
}

func (s *Server) mailboxSettings(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	v, err := s.deps.Mailboxes.Settings(r.Context(), outgoingCaller(r), id)
	if err != nil {
		return err
	}
	mb := toMailboxJSON(v.Mailbox)
	writeJSON(w, http.StatusOK, map[string]any{
		"mailbox": mb,
		"imap":    mb.IMAP,
		"outgoing": map[string]any{
			"enabled": v.Mailbox.OutEnabled, "save_copy": v.Mailbox.OutSaveCopy, "source": mb.Outgoing.Source,
			"smtp": smtpView(v.SMTP), "suggestion": smtpView(v.Suggestion),
		},
		"outgoing_status": v.Status,
		"sync":            mb.Sync,
	})
	return nil
}
