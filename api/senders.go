package api

import (
	"context"
	"net/http"
	"strconv"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/outgoing"
)

// Senders is what the API needs for the CRM's senders.
type Senders interface {
	Senders(ctx context.Context, c outgoing.Caller) ([]outgoing.SenderView, error)
	GetSender(ctx context.Context, c outgoing.Caller, id string) (outgoing.SenderView, error)
	CreateSMTPSender(ctx context.Context, c outgoing.Caller, in outgoing.SMTPSenderInput) (outgoing.Sender, outgoing.Report, error)
	UpdateSender(ctx context.Context, c outgoing.Caller, id string, p outgoing.SenderPatch) (outgoing.SenderView, *outgoing.Report, error)
	DeleteSender(ctx context.Context, c outgoing.Caller, id string) error
	StartConfirmation(ctx context.Context, c outgoing.Caller, email, name string, shared bool) (int64, error)
	Confirm(ctx context.Context, c outgoing.Caller, id int64, code string) (outgoing.SenderView, error)
}

type senderJSON struct {
	ID           string `json:"id"`
	Kind         string `json:"kind"`
	Email        string `json:"email"`
	Name         string `json:"name"`
	Shared       bool   `json:"shared"`
	Owner        *int64 `json:"owner"`
	MailboxID    *int64 `json:"mailbox_id,omitempty"`
	Deletable    bool   `json:"deletable"`
	NotDeletable string `json:"not_deletable,omitempty"`
}

func toSenderJSON(v outgoing.SenderView) senderJSON {
	j := senderJSON{ID: v.ID, Kind: v.Kind, Email: v.Email, Name: v.Name, Shared: v.Shared, MailboxID: v.MailboxID,
		Deletable: v.Deletable, NotDeletable: v.NotDeletable}
	if v.Owner != 0 {
		o := v.Owner
		j.Owner = &o
	}
	return j
}

func (s *Server) listSenders(w http.ResponseWriter, r *http.Request) error {
	list, err := s.deps.Senders.Senders(r.Context(), outgoingCaller(r))
	if err != nil {
		return err
	}
	out := make([]senderJSON, 0, len(list))
	for _, v := range list {
		out = append(out, toSenderJSON(v))
	}
	writeJSON(w, http.StatusOK, map[string]any{"senders": out})
	return nil
}

func (s *Server) getSender(w http.ResponseWriter, r *http.Request) error {
	v, err := s.deps.Senders.GetSender(r.Context(), outgoingCaller(r), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toSenderJSON(v))
	return nil
}

type senderIn struct {
	Kind   string  `json:"kind"`
	Email  string  `json:"email"`
	Name   string  `json:"name"`
	Shared bool    `json:"shared"`
	SMTP   *smtpIn `json:"smtp"`
}

func (s *Server) createSender(w http.ResponseWriter, r *http.Request) error {
	var in senderIn
	if err := decodeJSON(w, r, &in, 0); err != nil {
		return err
	}
	switch in.Kind {
	case outgoing.KindSMTP:
	case outgoing.KindAddress:
		return apperr.Invalid("kind", "use_confirmation", "an address sender is added by confirming a code: POST /api/v1/senders/confirmations")
	default:
		return apperr.Invalid("kind", "invalid_choice", "kind must be smtp (own SMTP server)")
	}
	if in.SMTP == nil {
		return apperr.Invalid("smtp", "required", "the SMTP server settings are required")
	}
	set := outgoing.Settings{Host: in.SMTP.Host, Port: in.SMTP.Port, Security: outgoing.Security(in.SMTP.Security),
		Auth: outgoing.AuthMethod(in.SMTP.Auth), Login: in.SMTP.Login}
	if set.Auth == "" {
		set.Auth = outgoing.AuthLogin
	}
	if in.SMTP.Password != nil {
		set.Password = *in.SMTP.Password
	}
	c := outgoingCaller(r)
	sd, rep, err := s.deps.Senders.CreateSMTPSender(r.Context(), c, outgoing.SMTPSenderInput{
		Email: in.Email, Name: in.Name, Shared: in.Shared, Settings: set,
	})
	if err != nil {
		return err
	}
	v, err := s.deps.Senders.GetSender(r.Context(), c, strconv.FormatInt(sd.ID, 10))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"sender": toSenderJSON(v), "check": rep})
	return nil
}

type senderPatchIn struct {
	Name   *string `json:"name"`
	Shared *bool   `json:"shared"`
	SMTP   *struct {
		Host     *string        `json:"host"`
		Port     *int           `json:"port"`
		Security *string        `json:"security"`
		Auth     *string        `json:"auth"`
		Login    *string        `json:"login"`
		Password *secret.Secret `json:"password"`
	} `json:"smtp"`
}

func (s *Server) updateSender(w http.ResponseWriter, r *http.Request) error {
	var in senderPatchIn
	if err := decodeJSON(w, r, &in, 0); err != nil {
		return err
	}
	p := outgoing.SenderPatch{Name: in.Name, Shared: in.Shared}
	if in.SMTP != nil {
		p.Host, p.Port, p.Login, p.Password = in.SMTP.Host, in.SMTP.Port, in.SMTP.Login, in.SMTP.Password
		if in.SMTP.Security != nil {
			v := outgoing.Security(*in.SMTP.Security)
			p.Security = &v
		}
		if in.SMTP.Auth != nil {
			v := outgoing.AuthMethod(*in.SMTP.Auth)
			p.Auth = &v
		}
	}
	v, rep, err := s.deps.Senders.UpdateSender(r.Context(), outgoingCaller(r), r.PathValue("id"), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"sender": toSenderJSON(v), "check": rep})
	return nil
}

func (s *Server) deleteSender(w http.ResponseWriter, r *http.Request) error {
	if err := s.deps.Senders.DeleteSender(r.Context(), outgoingCaller(r), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) startConfirmation(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email  string `json:"email"`
		Name   string `json:"name"`
		Shared bool   `json:"shared"`
	}
	if err := decodeJSON(w, r, &in, 0); err != nil {
		return err
	}
	id, err := s.deps.Senders.StartConfirmation(r.Context(), outgoingCaller(r), in.Email, in.Name, in.Shared)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"confirmation_id": id})
	return nil
}

func (s *Server) confirmSender(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var in struct {
		Code string `json:"code"`
	}
	if err := decodeJSON(w, r, &in, 0); err != nil {
		return err
	}
	v, err := s.deps.Senders.Confirm(r.Context(), outgoingCaller(r), id, in.Code)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"sender": toSenderJSON(v)})
	return nil
}
