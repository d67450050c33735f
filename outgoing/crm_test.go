package outgoing_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/outgoing"
)

var (
	annC = outgoing.Caller{UserID: 2, Lang: "en"}
	bobC = outgoing.Caller{UserID: 3, Lang: "en"}
)

const annSMTP = "ann.crm@example.com"

// crmEnv has a shared system account (the relay), Ann's own-SMTP sender,
// Ann's confirmed address and Ann's mailbox sender.
type crmEnv struct {
	*env
	peer    *testpeer.SMTPServer
	ids     map[string]string // kind → sender id
	relayID int64
}

func newCRMEnv(t *testing.T, d store.Dialect) *crmEnv {
	t.Helper()
	e := newEnv(t, storetest.Open(t, d), outgoing.Config{ConfirmationAccount: siteAddr})
	p := testpeer.StartSMTP(t, &testpeer.SMTPOptions{Mode: testpeer.SMTPStartTLS, TLS: e.ca.ServerTLS(t),
		Users: map[string]string{siteAddr: sitePass, annSMTP: "ann-smtp-pass"}})
	in := accountInput(p, outgoing.SecuritySTARTTLS, "Portal")
	in.SharedWithUsers = ptr(true)
	relay, _, err := e.svc.CreateAccount(context.Background(), admin, in)
	if err != nil {
		t.Fatal(err)
	}
	ce := &crmEnv{env: e, peer: p, ids: map[string]string{}, relayID: relay.ID}
	ce.ids["system"] = "system-" + strconv.FormatInt(relay.ID, 10)
	sd, _, err := e.svc.CreateSMTPSender(context.Background(), annC, outgoing.SMTPSenderInput{Email: annSMTP, Name: "Ann (CRM)",
		Settings: outgoing.Settings{Host: "localhost", Port: p.Port(), Security: outgoing.SecuritySTARTTLS,
			Auth: outgoing.AuthLogin, Login: annSMTP, Password: "ann-smtp-pass"}})
	if err != nil {
		t.Fatal(err)
	}
	ce.ids["smtp"] = strconv.FormatInt(sd.ID, 10)
	ce.ids["address"] = ce.confirm(t, annC, "ann.personal@example.net").ID
	// A mailbox sender, as the mailbox service mirrors it.
	now := time.Now().UTC()
	g := e.db.Gorm
	if err := g.Exec(`INSERT INTO mailboxes (id, user_id, email, imap_host, imap_port, imap_security, imap_login, imap_password, out_enabled, created_at, updated_at)
		VALUES (50, 2, 'ann@example.com', 'imap.example.com', 993, 'ssl', 'ann', 'x', TRUE, ?, ?)`, now, now).Error; err != nil {
		t.Fatal(err)
	}
	if err := g.Exec(`INSERT INTO senders (id, kind, user_id, email, name, mailbox_id, created_at, updated_at)
		VALUES (60, 'mailbox', 2, 'ann@example.com', 'Ann', 50, ?, ?)`, now, now).Error; err != nil {
		t.Fatal(err)
	}
	ce.ids["mailbox"] = "60"
	e.svc.AddRouter(mailboxStub{})
	return ce
}

// mailboxStub stands in for the mailbox package's router: Ann's mailbox
// ann@example.com has external SMTP on.
type mailboxStub struct{}

func (mailboxStub) Kind() string { return outgoing.KindMailbox }

func (mailboxStub) Route(_ context.Context, c outgoing.Caller, from string) (outgoing.Route, bool, error) {
	if c.UserID == 2 && from == "ann@example.com" {
		return outgoing.Route{Kind: outgoing.KindMailbox, ID: 50, SenderName: "Ann"}, true, nil
	}
	return outgoing.Route{}, false, nil
}

func (mailboxStub) Target(context.Context, int64) (outgoing.Target, error) {
	return outgoing.Target{}, apperr.NotFound("mailbox")
}

func (mailboxStub) AuthFailed(context.Context, int64) error { return nil }

var codeRE = regexp.MustCompile(`code is: (\d{6})`)

// mailedCode sends the outbox and returns the code the peer received for addr.
func (e *crmEnv) mailedCode(t *testing.T, addr string) string {
	t.Helper()
	e.process(t)
	for i := len(e.peer.Messages()) - 1; i >= 0; i-- {
		m := e.peer.Messages()[i]
		if m.To[0] == addr {
			if c := codeRE.FindSubmatch(m.Data); c != nil {
				return string(c[1])
			}
		}
	}
	t.Fatalf("no code reached %s", addr)
	return ""
}

func (e *crmEnv) confirm(t *testing.T, c outgoing.Caller, addr string) outgoing.SenderView {
	t.Helper()
	id, err := e.svc.StartConfirmation(context.Background(), c, addr, "Ann Personal", false)
	if err != nil {
		t.Fatalf("StartConfirmation(%s) = %v", addr, err)
	}
	v, err := e.svc.Confirm(context.Background(), c, id, e.mailedCode(t, addr))
	if err != nil {
		t.Fatalf("Confirm() = %v", err)
	}
	return v
}

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	if ae, ok := apperr.As(err); ok {
		return ae.Code
	}
	return err.Error()
}

// Every cell of sender kind × action × caller.
func TestSenderKindActionCaller(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newCRMEnv(t, d)
			ctx := context.Background()
			callers := map[string]outgoing.Caller{"owner": annC, "other": bobC, "admin": admin}
			type cell struct{ kind, action, caller, want string }
			cells := []cell{
				// list: "ok" = listed, "absent" = not listed.
				{"mailbox", "list", "owner", "ok"}, {"mailbox", "list", "other", "absent"}, {"mailbox", "list", "admin", "ok"},
				{"smtp", "list", "owner", "ok"}, {"smtp", "list", "other", "absent"}, {"smtp", "list", "admin", "ok"},
				{"address", "list", "owner", "ok"}, {"address", "list", "other", "absent"}, {"address", "list", "admin", "ok"},
				{"system", "list", "owner", "ok"}, {"system", "list", "other", "ok"}, {"system", "list", "admin", "ok"},
				// patch (rename).
				{"mailbox", "patch", "owner", "sender_managed_by_mailbox"}, {"mailbox", "patch", "other", "not_found"}, {"mailbox", "patch", "admin", "sender_managed_by_mailbox"},
				{"smtp", "patch", "owner", "ok"}, {"smtp", "patch", "other", "not_found"}, {"smtp", "patch", "admin", "ok"},
				{"address", "patch", "owner", "ok"}, {"address", "patch", "other", "not_found"}, {"address", "patch", "admin", "ok"},
				{"system", "patch", "owner", "sender_managed_by_admin"}, {"system", "patch", "other", "sender_managed_by_admin"}, {"system", "patch", "admin", "sender_managed_by_admin"},
				// send as.
				{"mailbox", "send", "owner", "ok"}, {"mailbox", "send", "other", "sender_not_allowed"}, {"mailbox", "send", "admin", "sender_not_allowed"},
				{"smtp", "send", "owner", "ok"}, {"smtp", "send", "other", "sender_not_allowed"}, {"smtp", "send", "admin", "sender_not_allowed"},
				{"address", "send", "owner", "ok"}, {"address", "send", "other", "sender_not_allowed"}, {"address", "send", "admin", "sender_not_allowed"},
				{"system", "send", "owner", "ok"}, {"system", "send", "other", "ok"}, {"system", "send", "admin", "ok"},
				// delete: the other user first (refused), then the admin or the owner.
				{"mailbox", "delete", "other", "not_found"}, {"mailbox", "delete", "owner", "sender_managed_by_mailbox"}, {"mailbox", "delete", "admin", "sender_managed_by_mailbox"},
				{"system", "delete", "other", "sender_managed_by_admin"}, {"system", "delete", "owner", "sender_managed_by_admin"}, {"system", "delete", "admin", "sender_managed_by_admin"},
				{"smtp", "delete", "other", "not_found"}, {"smtp", "delete", "admin", "ok"}, {"smtp", "delete", "owner", "not_found"},
				{"address", "delete", "other", "not_found"}, {"address", "delete", "owner", "ok"}, {"address", "delete", "admin", "not_found"},
			}
			for _, c := range cells {
				caller, id := callers[c.caller], e.ids[c.kind]
				var got string
				switch c.action {
				case "list":
					list, err := e.svc.Senders(ctx, caller)
					if err != nil {
						t.Fatal(err)
					}
					got = "absent"
					for _, v := range list {
						if v.ID == id {
							got = "ok"
						}
					}
				case "patch":
					_, _, err := e.svc.UpdateSender(ctx, caller, id, outgoing.SenderPatch{Name: ptr("Renamed")})
					got = outcome(err)
				case "send":
					_, err := e.svc.Submit(ctx, caller, outgoing.Draft{To: []string{"client@example.org"}, Subject: "Deal", Text: "Hi"},
						outgoing.SubmitOptions{SenderID: id})
					got = outcome(err)
				case "delete":
					got = outcome(e.svc.DeleteSender(ctx, caller, id))
				}
				if got != c.want {
					t.Errorf("%s %s by %s = %s, want %s", c.action, c.kind, c.caller, got, c.want)
				}
			}
		})
	}
}

func TestConfirmationCodes(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newCRMEnv(t, d)
			ctx := context.Background()
			addr := "deals@example.net"
			id, err := e.svc.StartConfirmation(ctx, bobC, addr, "Deals", false)
			if err != nil {
				t.Fatal(err)
			}
			code := e.mailedCode(t, addr)
			// Only a hash is stored.
			var stored string
			e.db.Gorm.Raw("SELECT code_hash FROM sender_confirmations WHERE id = ?", id).Scan(&stored)
			if stored == code || bytes.Contains([]byte(stored), []byte(code)) {
				t.Fatalf("the code is stored in clear")
			}
			wrong := fmt.Sprintf("%06d", (mustAtoi(code)+1)%1_000_000)
			// Another user cannot use it.
			if _, err := e.svc.Confirm(ctx, annC, id, code); !errors.Is(err, apperr.ErrNotFound) {
				t.Errorf("Confirm() by another user = %v, want not found", err)
			}
			for i := range 5 {
				if _, err := e.svc.Confirm(ctx, bobC, id, wrong); outcome(err) != "wrong_code" {
					t.Fatalf("wrong code #%d = %v", i+1, err)
				}
			}
			if _, err := e.svc.Confirm(ctx, bobC, id, code); outcome(err) != "code_dead" {
				t.Fatalf("the right code after 5 wrong ones = %v, want code_dead", err)
			}
			// Expired.
			id2, _ := e.svc.StartConfirmation(ctx, bobC, addr, "Deals", false)
			code2 := e.mailedCode(t, addr)
			e.clock.Advance(31 * time.Minute)
			if _, err := e.svc.Confirm(ctx, bobC, id2, code2); outcome(err) != "code_expired" {
				t.Fatalf("an expired code = %v, want code_expired", err)
			}
			// A code for one address does not confirm another.
			idA, _ := e.svc.StartConfirmation(ctx, bobC, "a@example.net", "", false)
			codeA := e.mailedCode(t, "a@example.net")
			idB, _ := e.svc.StartConfirmation(ctx, bobC, "b@example.net", "", false)
			codeB := e.mailedCode(t, "b@example.net")
			if codeA != codeB {
				if _, err := e.svc.Confirm(ctx, bobC, idB, codeA); outcome(err) != "wrong_code" {
					t.Errorf("address A's code on address B = %v, want wrong_code", err)
				}
			}
			v, err := e.svc.Confirm(ctx, bobC, idA, codeA)
			if err != nil || v.Kind != outgoing.KindAddress || v.Email != "a@example.net" {
				t.Fatalf("Confirm() = %+v, %v", v, err)
			}
			if _, err := e.svc.Confirm(ctx, bobC, idA, codeA); outcome(err) != "code_used" {
				t.Errorf("a used code again = %v, want code_used", err)
			}
			// Rate limits: 5 per user per hour (bob has 4 in the last hour).
			if _, err := e.svc.StartConfirmation(ctx, bobC, "c@example.net", "", false); err != nil {
				t.Fatalf("5th confirmation = %v", err)
			}
			_, err = e.svc.StartConfirmation(ctx, bobC, "d@example.net", "", false)
			ae, _ := apperr.As(err)
			if !errors.Is(err, apperr.ErrRateLimited) || ae.RetryAfter <= 0 {
				t.Errorf("6th confirmation within an hour = %v, want 429 with Retry-After", err)
			}
			// 3 per address per day, across users and hours.
			e.clock.Advance(2 * time.Hour)
			if _, err := e.svc.StartConfirmation(ctx, annC, addr, "", false); err != nil {
				t.Fatalf("3rd code for %s within a day = %v, want accepted", addr, err)
			}
			_, err = e.svc.StartConfirmation(ctx, annC, addr, "", false)
			if !errors.Is(err, apperr.ErrRateLimited) {
				t.Errorf("4th code for %s within a day = %v, want 429", addr, err)
			}
		})
	}
}

func mustAtoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// A deal message sent with sender_id arrives with the sender's name and
// address, a Bcc to self, and the send log finds it by the deal.
func TestDealMessageWithSenderID(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newCRMEnv(t, d)
			ctx := context.Background()
			crm := &outgoing.CRMRef{EntityType: "deal", EntityID: "testdeal"}
			m, err := e.svc.Submit(ctx, annC, outgoing.Draft{To: []string{"client@example.org"}, Subject: "Offer", Text: "Price list"},
				outgoing.SubmitOptions{SenderID: e.ids["smtp"], CRM: crm, CopyToSelf: true})
			if err != nil {
				t.Fatal(err)
			}
			addrMsg, err := e.svc.Submit(ctx, annC, outgoing.Draft{To: []string{"client@example.org"}, Subject: "Hi", Text: "x"},
				outgoing.SubmitOptions{SenderID: e.ids["address"]})
			if err != nil {
				t.Fatal(err)
			}
			e.process(t)
			var deal, viaRelay *testpeer.SMTPMessage
			for _, pm := range e.peer.Messages() {
				switch {
				case bytes.Contains(pm.Data, []byte(m.MessageID)):
					deal = &pm
				case bytes.Contains(pm.Data, []byte(addrMsg.MessageID)):
					viaRelay = &pm
				}
			}
			if deal == nil || viaRelay == nil {
				t.Fatalf("the peer lacks the messages")
			}
			parsed, _ := mail.ReadMessage(bytes.NewReader(deal.Data))
			from, _ := mail.ParseAddress(parsed.Header.Get("From"))
			if from.Name != "Ann (CRM)" || from.Address != annSMTP || deal.AuthUser != annSMTP {
				t.Errorf("deal message From %q <%s> via %s, want Ann (CRM) <%s> through her own SMTP", from.Name, from.Address, deal.AuthUser, annSMTP)
			}
			if len(deal.To) != 2 || deal.To[1] != annSMTP || parsed.Header.Get("Bcc") != "" {
				t.Errorf("envelope recipients %v (Bcc header %q), want the client and a hidden copy to self", deal.To, parsed.Header.Get("Bcc"))
			}
			relayed, _ := mail.ReadMessage(bytes.NewReader(viaRelay.Data))
			if relayed.Header.Get("From") != `"Ann Personal" <ann.personal@example.net>` || relayed.Header.Get("Sender") != "<"+siteAddr+">" ||
				viaRelay.From != siteAddr || viaRelay.AuthUser != siteAddr {
				t.Errorf("address sender: From %q Sender %q envelope %s auth %s; want the address, the relay as Sender and envelope",
					relayed.Header.Get("From"), relayed.Header.Get("Sender"), viaRelay.From, viaRelay.AuthUser)
			}
			entries, _, err := e.svc.ListLog(ctx, annC, outgoing.LogFilter{CRM: crm})
			if err != nil || len(entries) != 1 || entries[0].MessageID != m.MessageID || entries[0].CrmEntityID != "testdeal" {
				t.Errorf("send log by deal = %+v, %v", entries, err)
			}
			// A name in the request overrides the sender's.
			over, err := e.svc.Submit(ctx, annC, outgoing.Draft{To: []string{"c@example.org"}, Subject: "x", Text: "x", SenderName: ptr("Sales Desk")},
				outgoing.SubmitOptions{SenderID: e.ids["smtp"]})
			if err != nil {
				t.Fatal(err)
			}
			e.process(t)
			for _, pm := range e.peer.Messages() {
				if bytes.Contains(pm.Data, []byte(over.MessageID)) {
					p, _ := mail.ReadMessage(bytes.NewReader(pm.Data))
					if f, _ := mail.ParseAddress(p.Header.Get("From")); f.Name != "Sales Desk" {
						t.Errorf("name override: From name %q", f.Name)
					}
				}
			}
		})
	}
}

// Changing a connection field re-checks; a bad one changes nothing.
func TestPatchOwnSMTPSenderRechecks(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newCRMEnv(t, d)
			bad := secret.Secret("nope")
			_, rep, err := e.svc.UpdateSender(context.Background(), annC, e.ids["smtp"], outgoing.SenderPatch{Password: &bad})
			if outcome(err) != "check_failed" || rep == nil || rep.Failed != outgoing.StepAuth {
				t.Fatalf("UpdateSender(wrong password) = %v, report %v", err, rep)
			}
			m, err := e.svc.Submit(context.Background(), annC, outgoing.Draft{From: annSMTP, To: []string{"x@example.org"}, Subject: "s", Text: "t"}, outgoing.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			e.process(t)
			if got := e.status(t, m.ID); got.Status != outgoing.StatusSent {
				t.Errorf("after a refused change the sender does not send: %s", got.LastError)
			}
		})
	}
}
