package api

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/outgoing"
)

// Outgoing is what the API needs of the outgoing service.
type Outgoing interface {
	ListAccounts(ctx context.Context) ([]outgoing.Account, error)
	GetAccount(ctx context.Context, id int64) (outgoing.Account, error)
	CreateAccount(ctx context.Context, c outgoing.Caller, in outgoing.AccountInput) (outgoing.Account, outgoing.Report, error)
	UpdateAccount(ctx context.Context, c outgoing.Caller, id int64, in outgoing.AccountInput) (outgoing.Account, *outgoing.Report, error)
	DeleteAccount(ctx context.Context, id int64) error
	CheckSettings(ctx context.Context, c outgoing.Caller, base *int64, in outgoing.AccountInput) (outgoing.Report, error)
	Submit(ctx context.Context, c outgoing.Caller, d outgoing.Draft, opts outgoing.SubmitOptions) (outgoing.OutboxMessage, error)
	SubmitRaw(ctx context.Context, c outgoing.Caller, envelopeFrom string, rcpts []string, raw io.Reader, opts outgoing.SubmitOptions) (outgoing.OutboxMessage, error)
	GetMessage(ctx context.Context, c outgoing.Caller, id int64) (outgoing.OutboxMessage, error)
	ListLog(ctx context.Context, c outgoing.Caller, f outgoing.LogFilter) ([]outgoing.LogEntry, string, error)
	Config() outgoing.Config
}

func outgoingCaller(r *http.Request) outgoing.Caller {
	u := caller(r)
	return outgoing.Caller{UserID: u.ID, Admin: u.Admin, Lang: string(i18n.Parse(r.Header.Get("Accept-Language")))}
}

// pathID parses the {id} path value.
func pathID(r *http.Request, name string) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, apperr.NotFound("object")
	}
	return id, nil
}

type checkJSON struct {
	At   *time.Time `json:"at"`
	OK   bool       `json:"ok"`
	Step string     `json:"step,omitempty"`
	Code string     `json:"code,omitempty"`
}

type accountJSON struct {
	ID              int64      `json:"id"`
	Active          bool       `json:"active"`
	SenderName      string     `json:"sender_name"`
	Email           string     `json:"email"`
	Host            string     `json:"host"`
	Port            int        `json:"port"`
	Security        string     `json:"security"`
	Auth            string     `json:"auth"`
	Login           string     `json:"login"`
	SharedWithUsers bool       `json:"shared_with_users"`
	DailyLimit      int        `json:"daily_limit"`
	AuthFailed      bool       `json:"auth_failed"`
	LastCheck       *checkJSON `json:"last_check"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
}

func toAccountJSON(a outgoing.Account) accountJSON {
	out := accountJSON{
		ID: a.ID, Active: a.Active, SenderName: a.SenderName, Email: a.Email, Host: a.Host, Port: a.Port,
		Security: string(a.Security), Auth: string(a.Auth), Login: a.Login, SharedWithUsers: a.SharedWithUsers,
		DailyLimit: a.DailyLimit, AuthFailed: a.AuthFailed, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt,
	}
	if a.CheckedAt != nil {
		out.LastCheck = &checkJSON{At: a.CheckedAt, OK: a.CheckOK, Step: a.CheckStep, Code: a.CheckCode}
	}
	return out
}

// accountIn is the body of POST and PATCH on SMTP accounts and of the check.
type accountIn struct {
	ID              *int64         `json:"id"` // check only: the stored account the values change
	Active          *bool          `json:"active"`
	SenderName      *string        `json:"sender_name"`
	Email           *string        `json:"email"`
	Host            *string        `json:"host"`
	Port            *int           `json:"port"`
	Security        *string        `json:"security"`
	Auth            *string        `json:"auth"`
	Login           *string        `json:"login"`
	Password        *secret.Secret `json:"password"`
	SharedWithUsers *bool          `json:"shared_with_users"`
	DailyLimit      *int           `json:"daily_limit"`
	TestRecipient   string         `json:"test_recipient"`
}

func (in accountIn) input() outgoing.AccountInput {
	out := outgoing.AccountInput{
		Active: in.Active, SenderName: in.SenderName, Email: in.Email, Host: in.Host, Port: in.Port,
		Login: in.Login, Password: in.Password, SharedWithUsers: in.SharedWithUsers, DailyLimit: in.DailyLimit,
		TestRecipient: in.TestRecipient,
	}
	if in.Security != nil {
		v := outgoing.Security(*in.Security)
		out.Security = &v
	}
	if in.Auth != nil {
		v := outgoing.AuthMethod(*in.Auth)
		out.Auth = &v
	}
	return out
}

func (s *Server) listAccounts(w http.ResponseWriter, r *http.Request) error {
	as, err := s.deps.Outgoing.ListAccounts(r.Context())
	if err != nil {
		return err
	}
	out := make([]accountJSON, 0, len(as))
	for _, a := range as {
		out = append(out, toAccountJSON(a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"accounts": out})
	return nil
}

func (s *Server) getAccount(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	a, err := s.deps.Outgoing.GetAccount(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toAccountJSON(a))
	return nil
}

func (s *Server) createAccount(w http.ResponseWriter, r *http.Request) error {
	var in accountIn
	if err := decodeJSON(w, r, &in, 0); err != nil {
		return err
	}
	if in.ID != nil {
		return &apperr.Error{Kind: apperr.ErrInvalid, Code: "unknown_field", Field: "id", Message: "this field is not known"}
	}
	a, rep, err := s.deps.Outgoing.CreateAccount(r.Context(), outgoingCaller(r), in.input())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"account": toAccountJSON(a), "check": rep})
	return nil
}

func (s *Server) updateAccount(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var in accountIn
	if err := decodeJSON(w, r, &in, 0); err != nil {
		return err
	}
	if in.ID != nil {
		return &apperr.Error{Kind: apperr.ErrInvalid, Code: "unknown_field", Field: "id", Message: "this field is not known"}
	}
	a, rep, err := s.deps.Outgoing.UpdateAccount(r.Context(), outgoingCaller(r), id, in.input())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"account": toAccountJSON(a), "check": rep})
	return nil
}

func (s *Server) deleteAccount(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := s.deps.Outgoing.DeleteAccount(r.Context(), id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) checkAccount(w http.ResponseWriter, r *http.Request) error {
	var in accountIn
	if err := decodeJSON(w, r, &in, 0); err != nil {
		return err
	}
	rep, err := s.deps.Outgoing.CheckSettings(r.Context(), outgoingCaller(r), in.ID, in.input())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

type attachmentIn struct {
	Filename      string `json:"filename"`
	ContentType   string `json:"content_type"`
	ContentBase64 string `json:"content_base64"`
}

type crmJSON struct {
	EntityType string `json:"entity_type"`
	EntityID   string `json:"entity_id"`
}

type outboxIn struct {
	From        string            `json:"from"`
	To          []string          `json:"to"`
	Cc          []string          `json:"cc"`
	Bcc         []string          `json:"bcc"`
	ReplyTo     string            `json:"reply_to"`
	Subject     string            `json:"subject"`
	Text        string            `json:"text"`
	HTML        string            `json:"html"`
	Attachments []attachmentIn    `json:"attachments"`
	Headers     map[string]string `json:"headers"`
	CRM         *crmJSON          `json:"crm"`
	SenderID    string            `json:"sender_id"`
	Name        *string           `json:"name"`
	CopyToSelf  bool              `json:"copy_to_self"`
}

type lastErrorJSON struct {
	Step    string `json:"step,omitempty"`
	Code    int    `json:"code,omitempty"`
	Reply   string `json:"reply,omitempty"`
	Message string `json:"message,omitempty"`
}

type outboxJSON struct {
	ID            int64          `json:"id"`
	MessageID     string         `json:"message_id"`
	Status        string         `json:"status"`
	From          string         `json:"from"`
	Recipients    []string       `json:"recipients"`
	Subject       string         `json:"subject"`
	Size          int64          `json:"size"`
	Attempts      int            `json:"attempts"`
	LastError     *lastErrorJSON `json:"last_error"`
	CRM           *crmJSON       `json:"crm,omitempty"`
	CreatedAt     time.Time      `json:"created_at"`
	UpdatedAt     time.Time      `json:"updated_at"`
	NextAttemptAt *time.Time     `json:"next_attempt_at"`
	SentAt        *time.Time     `json:"sent_at"`
}

func toOutboxJSON(m outgoing.OutboxMessage) outboxJSON {
	out := outboxJSON{
		ID: m.ID, MessageID: m.MessageID, Status: m.Status, From: m.FromAddr, Recipients: m.RecipientList(),
		Subject: m.Subject, Size: m.Size, Attempts: m.Attempts, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt,
		NextAttemptAt: m.NextAttemptAt, SentAt: m.SentAt,
	}
	if m.LastStep != "" || m.LastError != "" {
		out.LastError = &lastErrorJSON{Step: m.LastStep, Code: m.LastCode, Reply: m.LastReply, Message: m.LastError}
		if m.Status == outgoing.StatusSent {
			out.LastError = nil
		}
	}
	if m.CrmEntityType != "" {
		out.CRM = &crmJSON{EntityType: m.CrmEntityType, EntityID: m.CrmEntityID}
	}
	return out
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request) error {
	limit := s.deps.Outgoing.Config().MaxMessageBytes*4/3 + 1<<20
	var in outboxIn
	if err := decodeJSON(w, r, &in, limit); err != nil {
		return err
	}
	d := outgoing.Draft{
		From: in.From, To: in.To, Cc: in.Cc, Bcc: in.Bcc, ReplyTo: in.ReplyTo, Subject: in.Subject,
		Text: in.Text, HTML: in.HTML, Headers: in.Headers, SenderName: in.Name,
	}
	for i, a := range in.Attachments {
		content, err := base64.StdEncoding.DecodeString(a.ContentBase64)
		if err != nil {
			return apperr.Invalid(fmt.Sprintf("attachments[%d].content_base64", i), "invalid_base64", "not valid base64")
		}
		d.Attachments = append(d.Attachments, outgoing.Attachment{Filename: a.Filename, ContentType: a.ContentType, Content: content})
	}
	opts := outgoing.SubmitOptions{SenderID: in.SenderID, CopyToSelf: in.CopyToSelf}
	if in.CRM != nil {
		opts.CRM = &outgoing.CRMRef{EntityType: in.CRM.EntityType, EntityID: in.CRM.EntityID}
	}
	m, err := s.deps.Outgoing.Submit(r.Context(), outgoingCaller(r), d, opts)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"id": m.ID, "status": m.Status, "message_id": m.MessageID})
	return nil
}

func (s *Server) getOutbox(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	m, err := s.deps.Outgoing.GetMessage(r.Context(), outgoingCaller(r), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toOutboxJSON(m))
	return nil
}

type logJSON struct {
	ID           int64     `json:"id"`
	OutboxID     int64     `json:"outbox_id"`
	MessageID    string    `json:"message_id"`
	UserID       *int64    `json:"user_id"`
	Sender       string    `json:"sender"`
	AccountEmail string    `json:"account_email"`
	From         string    `json:"from"`
	Recipients   []string  `json:"recipients"`
	Subject      string    `json:"subject"`
	Status       string    `json:"status"`
	Step         string    `json:"step,omitempty"`
	Code         int       `json:"code,omitempty"`
	Reply        string    `json:"reply,omitempty"`
	DurationMS   int64     `json:"duration_ms"`
	CRM          *crmJSON  `json:"crm,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
}

func (s *Server) listLog(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := outgoing.LogFilter{Status: q.Get("status"), From: q.Get("from"), Cursor: q.Get("cursor")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return apperr.Invalid("limit", "invalid_number", "limit must be a whole number")
		}
		f.Limit = n
	}
	if v := q.Get("account"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return apperr.Invalid("account", "invalid_number", "account must be an SMTP account id")
		}
		f.RouteKind, f.RouteID = outgoing.KindSystem, id
	}
	for name, dst := range map[string]**time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return apperr.Invalid(name, "invalid_time", "use RFC 3339, e.g. 2026-11-27T10:00:00Z")
			}
			*dst = &t
		}
	}
	if et, eid := q.Get("crm_entity_type"), q.Get("crm_entity_id"); et != "" || eid != "" {
		f.CRM = &outgoing.CRMRef{EntityType: et, EntityID: eid}
	}
	entries, next, err := s.deps.Outgoing.ListLog(r.Context(), outgoingCaller(r), f)
	if err != nil {
		return err
	}
	out := make([]logJSON, 0, len(entries))
	for _, e := range entries {
		j := logJSON{
			ID: e.ID, OutboxID: e.OutboxID, MessageID: e.MessageID, UserID: e.UserID,
			Sender: fmt.Sprintf("%s:%d", e.RouteKind, e.RouteID), AccountEmail: e.AccountEmail, From: e.FromAddr,
			Recipients: outgoing.OutboxMessage{Recipients: e.Recipients}.RecipientList(), Subject: e.Subject,
			Status: e.Status, Step: e.Step, Code: e.Code, Reply: e.Reply, DurationMS: e.DurationMS, CreatedAt: e.CreatedAt,
		}
		if e.CrmEntityType != "" {
			j.CRM = &crmJSON{EntityType: e.CrmEntityType, EntityID: e.CrmEntityID}
		}
		out = append(out, j)
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": out, "next_cursor": next})
	return nil
}
