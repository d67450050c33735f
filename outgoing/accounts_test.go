package outgoing_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/outgoing"
)

// refusedReport returns the report of a refused save, failing the test when
// the error is not a check failure.
func refusedReport(t *testing.T, err error) outgoing.Report {
	t.Helper()
	ae, ok := apperr.As(err)
	if !ok || ae.Code != "check_failed" || !errors.Is(err, apperr.ErrUnprocessable) {
		t.Fatalf("error = %v, want 422 check_failed", err)
	}
	rep, ok := ae.Detail.(outgoing.Report)
	if !ok {
		t.Fatalf("check_failed without a report: %#v", ae.Detail)
	}
	return rep
}

func failedStep(rep outgoing.Report) outgoing.StepResult {
	for _, s := range rep.Steps {
		if !s.OK {
			return s
		}
	}
	return outgoing.StepResult{}
}

func assertNothingSaved(t *testing.T, e *env) {
	t.Helper()
	as, err := e.svc.ListAccounts(context.Background())
	if err != nil || len(as) != 0 {
		t.Errorf("accounts after a failed check = %v, %v; want none", as, err)
	}
}

func TestCreateAccountRefusedByStep(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			cases := []struct {
				name     string
				mode     testpeer.SMTPMode
				sec      outgoing.Security
				password string
				script   *testpeer.SMTPScript
				tlsNames []string
				step     string
				code     int
			}{
				{name: "wrong password", mode: testpeer.SMTPStartTLS, sec: outgoing.SecuritySTARTTLS, password: "wrong", step: "auth", code: 535},
				{name: "mail from refused", mode: testpeer.SMTPStartTLS, sec: outgoing.SecuritySTARTTLS, password: sitePass,
					script: &testpeer.SMTPScript{Mail: func(int, string) error {
						return testpeer.SMTPReply(553, "5.7.1", "Sender address rejected: not owned by user")
					}}, step: "mail_from", code: 553},
				{name: "rcpt refused", mode: testpeer.SMTPImplicitTLS, sec: outgoing.SecuritySSL, password: sitePass,
					script: &testpeer.SMTPScript{Rcpt: func(int, string) error {
						return testpeer.SMTPReply(550, "5.1.1", "No such user")
					}}, step: "rcpt", code: 550},
				{name: "no starttls offered", mode: testpeer.SMTPPlain, sec: outgoing.SecuritySTARTTLS, password: sitePass, step: "starttls"},
				{name: "certificate for another name", mode: testpeer.SMTPImplicitTLS, sec: outgoing.SecuritySSL, password: sitePass,
					tlsNames: []string{"mail.other.example"}, step: "tls"},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					e := newEnv(t, storetest.Open(t, d), outgoing.Config{})
					tlsCfg := e.ca.ServerTLS(t, c.tlsNames...)
					p := testpeer.StartSMTP(t, &testpeer.SMTPOptions{
						Mode: c.mode, TLS: tlsCfg, Users: map[string]string{siteAddr: sitePass}, Script: c.script,
					})
					in := accountInput(p, c.sec, "")
					pw := secret.Secret(c.password)
					in.Password = &pw
					_, _, err := e.svc.CreateAccount(context.Background(), admin, in)
					rep := refusedReport(t, err)
					st := failedStep(rep)
					if string(st.Step) != c.step || string(rep.Failed) != c.step {
						t.Fatalf("Check() step = %q, want %q; report %+v", st.Step, c.step, rep)
					}
					if c.code != 0 && (st.Reply == nil || st.Reply.Code != c.code) {
						t.Errorf("step %s reply = %+v, want code %d", st.Step, st.Reply, c.code)
					}
					if st.Explanation == "" {
						t.Errorf("step %s has no explanation", st.Step)
					}
					assertNothingSaved(t, e)
					if c.step == "starttls" {
						for _, s := range p.Sessions() {
							if len(s.Auths) > 0 || bytes.Contains(s.Transcript, []byte("AUTH")) || bytes.Contains(s.Transcript, []byte(c.password)) {
								t.Errorf("credentials crossed a connection without TLS: %+v", s.Auths)
							}
						}
					}
				})
			}
		})
	}
}

func TestCheckOfAStalledServerIsBounded(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			for _, stage := range []testpeer.SMTPStage{testpeer.SMTPStageGreeting, testpeer.SMTPStageAuth, testpeer.SMTPStageRcpt} {
				t.Run(string(stage), func(t *testing.T) {
					const bound = 700 * time.Millisecond
					e := newEnv(t, storetest.Open(t, d), outgoing.Config{CheckTimeout: bound})
					p := testpeer.StartSMTP(t, &testpeer.SMTPOptions{
						Mode: testpeer.SMTPStartTLS, TLS: e.ca.ServerTLS(t), Users: map[string]string{siteAddr: sitePass},
						Script: &testpeer.SMTPScript{StallAt: stage},
					})
					start := time.Now()
					_, _, err := e.svc.CreateAccount(context.Background(), admin, accountInput(p, outgoing.SecuritySTARTTLS, ""))
					elapsed := time.Since(start)
					rep := refusedReport(t, err)
					st := failedStep(rep)
					want := map[testpeer.SMTPStage]string{testpeer.SMTPStageGreeting: "ehlo", testpeer.SMTPStageAuth: "auth", testpeer.SMTPStageRcpt: "rcpt"}[stage]
					if string(st.Step) != want || st.Code != "timeout" {
						t.Errorf("Check() step = %q code %q, want %q timeout", st.Step, st.Code, want)
					}
					if elapsed > bound+time.Second {
						t.Errorf("the check took %v, want within %v + 1 s", elapsed, bound)
					}
					assertNothingSaved(t, e)
				})
			}
		})
	}
}

func TestAccountPasswordWriteOnlyAndSealed(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, outgoing.Config{})
		p := e.peer(t, testpeer.SMTPStartTLS, nil)
		a := e.account(t, p, outgoing.SecuritySTARTTLS, "Portal")
		var stored string
		db.Gorm.Raw("SELECT password FROM smtp_accounts WHERE id = ?", a.ID).Scan(&stored)
		if stored == "" || bytes.Contains([]byte(stored), []byte(sitePass)) {
			t.Fatalf("stored password %q: want a sealed value", stored)
		}
		// PATCH without a password keeps it (the account still sends).
		changed, rep, err := e.svc.UpdateAccount(context.Background(), admin, a.ID, outgoing.AccountInput{SenderName: ptr("Renamed")})
		if err != nil || changed.SenderName != "Renamed" || rep != nil {
			t.Fatalf("UpdateAccount(name) = %v, report %v; want a change without a check", err, rep)
		}
		// A wrong password in a PATCH is checked and refused; the old stays.
		bad := secret.Secret("nope")
		if _, _, err := e.svc.UpdateAccount(context.Background(), admin, a.ID, outgoing.AccountInput{Password: &bad}); err == nil {
			t.Fatalf("UpdateAccount(wrong password) = nil, want refused")
		}
		m := e.submit(t, admin, draft(siteAddr, "z@example.org"))
		e.process(t)
		if got := e.status(t, m.ID); got.Status != outgoing.StatusSent {
			t.Errorf("after a refused password change the account does not send: %q %s", got.Status, got.LastError)
		}
		// The same address twice is a conflict, in any case.
		in := accountInput(p, outgoing.SecuritySTARTTLS, "")
		in.Email = ptr("SITE@example.com")
		in.Login = ptr(siteAddr)
		if _, _, err := e.svc.CreateAccount(context.Background(), admin, in); !errors.Is(err, apperr.ErrConflict) {
			t.Errorf("a second account for the same address = %v, want conflict", err)
		}
	})
}

func TestAccountValidationNamesTheField(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{})
			p := e.peer(t, testpeer.SMTPStartTLS, nil)
			cases := map[string]func(in *outgoing.AccountInput){
				"email":    func(in *outgoing.AccountInput) { in.Email = ptr("not-an-address") },
				"host":     func(in *outgoing.AccountInput) { in.Host = ptr("smtp://x") },
				"port":     func(in *outgoing.AccountInput) { in.Port = ptr(70000) },
				"security": func(in *outgoing.AccountInput) { in.Security = ptr(outgoing.Security("tls")) },
				"auth":     func(in *outgoing.AccountInput) { in.Auth = ptr(outgoing.AuthMethod("oauth")) },
				"login":    func(in *outgoing.AccountInput) { in.Login = ptr("") },
				"password": func(in *outgoing.AccountInput) { in.Password = nil },
				"sender_name": func(in *outgoing.AccountInput) {
					in.SenderName = ptr("A\r\nBcc: x@example.org")
				},
				"daily_limit": func(in *outgoing.AccountInput) { in.DailyLimit = ptr(-1) },
			}
			for field, edit := range cases {
				in := accountInput(p, outgoing.SecuritySTARTTLS, "")
				edit(&in)
				_, _, err := e.svc.CreateAccount(context.Background(), admin, in)
				ae, ok := apperr.As(err)
				if !ok || ae.Field != field || !errors.Is(err, apperr.ErrInvalid) {
					t.Errorf("CreateAccount() with a bad %s = %v, want 400 naming %s", field, err, field)
				}
			}
			if n := p.Conns(); n != 0 {
				t.Errorf("invalid settings reached the server (%d connections)", n)
			}
		})
	}
}

// The service is no password-guessing proxy: checks of one login on one
// server are limited (5 a minute), with Retry-After, and the window moves on.
func TestChecksAreRateLimited(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{})
			p := e.peer(t, testpeer.SMTPStartTLS, nil)
			in := accountInput(p, outgoing.SecuritySTARTTLS, "")
			wrong := secret.Secret("guess")
			in.Password = &wrong
			ctx := context.Background()
			for i := range 5 {
				if _, err := e.svc.CheckSettings(ctx, admin, nil, in); err != nil {
					t.Fatalf("check %d = %v", i+1, err)
				}
			}
			conns := p.Conns()
			_, err := e.svc.CheckSettings(ctx, admin, nil, in)
			ae, ok := apperr.As(err)
			if !errors.Is(err, apperr.ErrRateLimited) || !ok || ae.RetryAfter <= 0 {
				t.Fatalf("6th check within a minute = %v, want 429 with Retry-After", err)
			}
			if p.Conns() != conns {
				t.Errorf("a refused check still dialled the server")
			}
			e.clock.Advance(61 * time.Second)
			if _, err := e.svc.CheckSettings(ctx, admin, nil, in); err != nil {
				t.Errorf("a check after the window = %v", err)
			}
		})
	}
}
