package outgoing

import (
	"context"
	"encoding/json"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/store"
)

// Message statuses.
const (
	StatusQueued  = "queued"
	StatusSending = "sending"
	StatusSent    = "sent"
	StatusFailed  = "failed"
	StatusUnknown = "unknown" // the reply to the final dot was lost: maybe delivered
)

// OutboxMessage is one accepted message and where it stands.
type OutboxMessage struct {
	ID            int64
	MessageID     string
	UserID        *int64
	RouteKind     string
	RouteID       int64
	FromAddr      string
	EnvelopeFrom  string
	Recipients    string // JSON array of addresses
	Subject       string
	Raw           []byte `gorm:"-"` // in outbox_bodies; read by the worker only
	Size          int64
	Status        string
	Attempts      int
	UnknownCount  int
	NextAttemptAt *time.Time
	LeaseOwner    string
	LeaseUntil    *time.Time
	LastStep      string
	LastCode      int
	LastReply     string
	LastError     string
	CrmEntityType string
	CrmEntityID   string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	SentAt        *time.Time
	// SentCopy is what became of the copy for the sender's Sent folder:
	// "", "appended", "exists", "skipped: …" or "failed: …".
	SentCopy string

	// The body as stored in outbox_bodies (body.go), set when the message
	// is submitted: encoded once, outside the group commit, and what the
	// handoff holds in memory until the worker takes the message.
	stored []byte
	codec  string
}

// TableName maps OutboxMessage to its table.
func (OutboxMessage) TableName() string { return "outbox" }

// outboxBody is a message's bytes, apart from its status row.
type outboxBody struct {
	OutboxID int64  `gorm:"primaryKey;autoIncrement:false"`
	Raw      []byte // encoded by Codec (body.go)
	Codec    string
}

// newOutboxBody returns m's body row, encoding m.Raw unless that is done.
func newOutboxBody(m *OutboxMessage) outboxBody {
	if m.stored == nil {
		m.stored, m.codec = encodeBody(m.Raw, nil)
	}
	return outboxBody{OutboxID: m.ID, Raw: m.stored, Codec: m.codec}
}

func (outboxBody) TableName() string { return "outbox_bodies" }

// RecipientList decodes Recipients.
func (m OutboxMessage) RecipientList() []string {
	var rs []string
	_ = json.Unmarshal([]byte(m.Recipients), &rs)
	return rs
}

// CRMRef links a message to a CRM record.
type CRMRef struct {
	EntityType string // lead, deal, contact, company
	EntityID   string
}

// SubmitOptions are the parts of a submission beyond the message itself.
type SubmitOptions struct {
	CRM *CRMRef
	// SenderID picks the sender explicitly (a CRM sender or "system-N")
	// instead of routing by the From address; the sender's address and name
	// become the From (a Draft.SenderName overrides the name).
	SenderID string
	// CopyToSelf adds the sender's own address as a Bcc.
	CopyToSelf bool
}

// Submit validates a draft, routes it by its From address, builds the
// message with its Message-ID and commits it to the outbox. When Submit
// returns, the message is durable.
func (s *Service) Submit(ctx context.Context, c Caller, d Draft, opts SubmitOptions) (OutboxMessage, error) {
	var (
		rt       Route
		explicit bool
	)
	if opts.SenderID != "" {
		if d.From != "" {
			return OutboxMessage{}, apperr.Invalid("from", "ambiguous", "give either from or sender_id, not both")
		}
		r, email, name, err := s.routeSender(ctx, c, opts.SenderID)
		if err != nil {
			return OutboxMessage{}, err
		}
		rt, explicit = r, true
		d.From = (&mail.Address{Name: name, Address: email}).String()
	}
	from, err := parseAddress("from", d.From)
	if err != nil {
		return OutboxMessage{}, err
	}
	if opts.CopyToSelf {
		d.Bcc = append(d.Bcc, from.Address)
	}
	if opts.CRM != nil {
		if err := validateCRM(opts.CRM); err != nil {
			return OutboxMessage{}, err
		}
	}
	// Validate everything before asking the database anything.
	parsedFrom, to, cc, bcc, replyTo, err := d.validate(s.cfg.MaxMessageBytes)
	if err != nil {
		return OutboxMessage{}, err
	}
	if !explicit {
		if rt, err = s.route(ctx, c, from.Address); err != nil {
			return OutboxMessage{}, err
		}
	}
	now := s.now()
	b, err := d.render(s.cfg.MaxMessageBytes, rt, now, parsedFrom, to, cc, bcc, replyTo)
	if err != nil {
		return OutboxMessage{}, err
	}
	return s.enqueue(ctx, c, rt, b, d.Subject, opts, now)
}

func (s *Service) enqueue(ctx context.Context, c Caller, rt Route, b *built, subject string, opts SubmitOptions, now time.Time) (OutboxMessage, error) {
	rcpts, _ := json.Marshal(b.recipients)
	env := rt.EnvelopeFrom
	if env == "" {
		env = b.from.Address
	}
	m := OutboxMessage{
		MessageID: b.messageID, RouteKind: rt.Kind, RouteID: rt.ID,
		FromAddr: b.from.Address, EnvelopeFrom: env, Recipients: string(rcpts),
		Subject: subject, Raw: b.raw, Size: int64(len(b.raw)),
		Status: StatusQueued, NextAttemptAt: &now, CreatedAt: now, UpdatedAt: now,
	}
	if c.UserID != 0 {
		uid := c.UserID
		m.UserID = &uid
	}
	if opts.CRM != nil {
		m.CrmEntityType, m.CrmEntityID = opts.CRM.EntityType, opts.CRM.EntityID
	}
	// This instance's worker, when it runs and has room, gets the message
	// in memory and its row leased to it (handoff.go); otherwise the row
	// waits in the queue for a claim.
	m.stored, m.codec = encodeBody(m.Raw, &s.scratch)
	h := s.handoff.Load()
	if h != nil && h.reserve(int64(len(m.stored))) {
		// attempts stays 0 until the worker's outcome: if the worker dies
		// first, the expired lease tells an untried message from one that
		// may have been delivered (expireLeases).
		until := now.Add(s.cfg.LeaseTTL)
		m.Status, m.LeaseOwner, m.LeaseUntil = StatusSending, h.owner, &until
	} else {
		h = nil
	}
	if err := s.inserts.insert(ctx, &m); err != nil {
		if h != nil {
			h.unreserve(int64(len(m.stored)))
			s.dropUncertain(ctx, m.MessageID, h.owner)
		}
		return OutboxMessage{}, fmt.Errorf("queue message %s: %w", b.messageID, err)
	}
	s.metrics.queued.Inc()
	s.log.InfoContext(ctx, "message queued", "outbox_id", m.ID, "message_id", m.MessageID,
		"route_kind", rt.Kind, "route_id", rt.ID, "recipients", len(b.recipients), "size", m.Size,
		"handed_to_worker", h != nil)
	if h != nil {
		handed := m
		handed.Raw = nil // the worker decodes the stored body: smaller while it waits
		h.push(handed)
	} else {
		s.wakeWorkers()
	}
	// The submitter sees the message as accepted into the queue, whether or
	// not this instance's worker already holds it.
	m.Status, m.LeaseOwner, m.LeaseUntil = StatusQueued, "", nil
	m.stored, m.codec = nil, ""
	return m, nil
}

// dropUncertain deletes a handed-over row whose insert reported an error:
// if the commit happened after all, the submitter, told it failed, may
// submit again, and the row would be a second copy that nobody takes until
// its worker stops (releaseUntried). Best effort.
func (s *Service) dropUncertain(ctx context.Context, messageID, owner string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := s.db.WithContext(ctx).Where("message_id = ? AND lease_owner = ? AND attempts = 0", messageID, owner).
		Delete(&OutboxMessage{}).Error
	if err != nil {
		s.log.WarnContext(ctx, "delete a row whose insert failed", "message_id", messageID, "error", err)
	}
}

func validateCRM(r *CRMRef) error {
	switch r.EntityType {
	case "lead", "deal", "contact", "company":
	default:
		return apperr.Invalid("crm.entity_type", "invalid_choice", "must be lead, deal, contact or company")
	}
	if r.EntityID == "" || len(r.EntityID) > 64 || strings.ContainsAny(r.EntityID, "\r\n\x00") {
		return apperr.Invalid("crm.entity_id", "invalid_id", "a CRM record id of 1 to 64 characters is required")
	}
	return nil
}

// GetMessage returns a message of the caller's (any message for an admin).
// Someone else's message answers as a missing one.
func (s *Service) GetMessage(ctx context.Context, c Caller, id int64) (OutboxMessage, error) {
	var m OutboxMessage
	q := s.db.WithContext(ctx).Where("id = ?", id)
	if !c.Admin {
		q = q.Where("user_id = ?", c.UserID)
	}
	err := q.Take(&m).Error
	if store.IsNotFound(err) {
		return OutboxMessage{}, apperr.NotFound("message")
	}
	if err != nil {
		return OutboxMessage{}, fmt.Errorf("read message %d: %w", id, err)
	}
	return m, nil
}

// QueueCounts returns how many messages are in each status.
func (s *Service) QueueCounts(ctx context.Context) (map[string]int64, error) {
	var rows []struct {
		Status string
		N      int64
	}
	if err := s.db.WithContext(ctx).Model(&OutboxMessage{}).Select("status, COUNT(*) AS n").Group("status").Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("count outbox: %w", err)
	}
	out := map[string]int64{StatusQueued: 0, StatusSending: 0, StatusSent: 0, StatusFailed: 0, StatusUnknown: 0}
	for _, r := range rows {
		out[r.Status] = r.N
	}
	return out, nil
}

// Raw returns the bytes of a message of the caller's (any message for an
// admin), as they are sent.
func (s *Service) Raw(ctx context.Context, c Caller, id int64) ([]byte, error) {
	if _, err := s.GetMessage(ctx, c, id); err != nil {
		return nil, err
	}
	var b outboxBody
	if err := s.db.WithContext(ctx).Where("outbox_id = ?", id).Take(&b).Error; err != nil {
		return nil, fmt.Errorf("read the body of message %d: %w", id, err)
	}
	return decodeBody(b.Raw, b.Codec)
}
