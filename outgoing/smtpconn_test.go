package outgoing_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/outgoing"
)

// scDial dials the peer and closes the connection at the end of the test.
func scDial(t *testing.T, n *outgoing.Network, set outgoing.Settings) *outgoing.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scGuard)
	defer cancel()
	c, err := n.Dial(ctx, set, nil)
	if err != nil {
		t.Fatalf("Dial() error = %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func scStepError(t *testing.T, err error) *outgoing.StepError {
	t.Helper()
	var se *outgoing.StepError
	if !errors.As(err, &se) {
		t.Fatalf("error = %v (%T), want a *outgoing.StepError", err, err)
	}
	return se
}

func TestSendStreamsTheMessage(t *testing.T) {
	s, ca := scPeer(t, testpeer.SMTPStartTLS, nil)
	c := scDial(t, scNetwork(ca, nil), scSettings(s, outgoing.SecuritySTARTTLS))

	info := c.Info()
	if info.TLSVersion != "TLS 1.3" || info.AuthUsed != "PLAIN" || !slices.Equal(info.AuthOffered, []string{"PLAIN", "LOGIN"}) ||
		info.Hello == "" || info.Host != scNamedHost || info.Addr.Port() != uint16(s.Port()) {
		t.Errorf("Info() = %+v, want TLS 1.3, PLAIN used of PLAIN LOGIN, a greeting, port %d", info, s.Port())
	}

	// Bare LF line endings, lines that start with a dot, and no final line
	// break: the client makes CRLF, dot-stuffs and ends the last line.
	msg := "Subject: dots\n\n.leading dot\n..two dots\nmiddle . dot\r\n.\nlast line"
	want := "Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\nmiddle . dot\r\n.\r\nlast line\r\n"
	var steps []outgoing.Step
	trace := func(r outgoing.StepResult) { steps = append(steps, r.Step) }
	for i := range 2 {
		reply, err := c.Send(context.Background(), scUser, []string{scRcpt, "carol@example.net"}, strings.NewReader(msg), trace)
		if err != nil {
			t.Fatalf("Send() #%d error = %v", i+1, err)
		}
		if reply == nil || reply.Code != 250 {
			t.Errorf("Send() #%d reply = %+v, want 250", i+1, reply)
		}
		if err := c.Reset(context.Background()); err != nil {
			t.Fatalf("Reset() error = %v", err)
		}
	}
	wantSteps := []outgoing.Step{outgoing.StepMailFrom, outgoing.StepRcpt, outgoing.StepData, outgoing.StepMailFrom, outgoing.StepRcpt, outgoing.StepData}
	if !slices.Equal(steps, wantSteps) {
		t.Errorf("Send() traced %v, want %v", steps, wantSteps)
	}
	msgs := s.Messages()
	if len(msgs) != 2 {
		t.Fatalf("peer messages = %d, want 2", len(msgs))
	}
	for i, m := range msgs {
		if string(m.Data) != want {
			t.Errorf("peer message #%d = %q, want %q", i+1, m.Data, want)
		}
		if m.ConnID != 1 || !slices.Equal(m.To, []string{scRcpt, "carol@example.net"}) {
			t.Errorf("peer message #%d on connection %d to %v, want connection 1 to both recipients", i+1, m.ConnID, m.To)
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close() error = %v", err)
	}
	if _, err := c.Send(context.Background(), scUser, []string{scRcpt}, strings.NewReader(msg), nil); !errors.Is(err, outgoing.ErrConnBroken) {
		t.Errorf("Send() after Close() error = %v, want ErrConnBroken", err)
	}
}

func TestSendFailures(t *testing.T) {
	cases := []struct {
		name          string
		script        *testpeer.SMTPScript
		rcpts         []string
		wantStep      outgoing.Step
		wantReply     int
		wantTemporary bool
		wantAfterData bool
		wantAddress   string
		reusable      bool // the connection carries another message after Reset
	}{
		{
			name: "second recipient refused",
			script: &testpeer.SMTPScript{Rcpt: func(_ int, to string) error {
				return refuseIf(to == "nobody@example.net", 550, "5.1.1", "User unknown")
			}},
			rcpts: []string{scRcpt, "nobody@example.net", "carol@example.net"}, wantStep: outgoing.StepRcpt, wantReply: 550,
			wantAddress: "nobody@example.net", reusable: true,
		},
		{
			name: "only recipient refused",
			script: &testpeer.SMTPScript{Rcpt: func(n int, _ string) error {
				return refuseIf(n == 1, 550, "5.1.1", "User unknown")
			}},
			rcpts: []string{scRcpt}, wantStep: outgoing.StepRcpt, wantReply: 550,
			wantAddress: scRcpt, reusable: true,
		},
		{
			name:   "mail from busy",
			script: &testpeer.SMTPScript{Mail: func(n int, _ string) error { return refuseIf(n == 1, 451, "4.3.0", "Try again later") }},
			rcpts:  []string{scRcpt}, wantStep: outgoing.StepMailFrom, wantReply: 451, wantTemporary: true,
			wantAddress: scUser, reusable: true,
		},
		{
			name:   "too many recipients",
			script: &testpeer.SMTPScript{Rcpt: func(n int, _ string) error { return refuseIf(n == 1, 452, "4.5.3", "Too many recipients") }},
			rcpts:  []string{scRcpt}, wantStep: outgoing.StepRcpt, wantReply: 452, wantTemporary: true,
			wantAddress: scRcpt, reusable: true,
		},
		{
			name:   "message refused after the dot",
			script: &testpeer.SMTPScript{Data: func(n int, _ []byte) error { return refuseIf(n == 1, 554, "5.6.0", "Message content rejected") }},
			rcpts:  []string{scRcpt}, wantStep: outgoing.StepData, wantReply: 554, reusable: true,
		},
		{
			name:   "connection lost after the dot",
			script: &testpeer.SMTPScript{DropAfterData: func(n int) bool { return n == 1 }},
			rcpts:  []string{scRcpt}, wantStep: outgoing.StepData, wantAfterData: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, ca := scPeer(t, testpeer.SMTPImplicitTLS, c.script)
			conn := scDial(t, scNetwork(ca, nil), scSettings(s, outgoing.SecuritySSL))
			_, err := conn.Send(context.Background(), scUser, c.rcpts, strings.NewReader("Subject: x\r\n\r\nbody\r\n"), nil)
			se := scStepError(t, err)
			if se.Step != c.wantStep {
				t.Errorf("Send() step = %q, want %q", se.Step, c.wantStep)
			}
			if c.wantReply == 0 && se.Reply != nil || c.wantReply != 0 && (se.Reply == nil || se.Reply.Code != c.wantReply) {
				t.Errorf("Send() reply = %+v, want code %d", se.Reply, c.wantReply)
			}
			if se.Temporary() != c.wantTemporary {
				t.Errorf("Send() Temporary() = %v, want %v", se.Temporary(), c.wantTemporary)
			}
			if se.AfterData != c.wantAfterData {
				t.Errorf("Send() AfterData = %v, want %v", se.AfterData, c.wantAfterData)
			}
			var ae *outgoing.AddressError
			if got := errors.As(err, &ae); got != (c.wantAddress != "") || got && ae.Address != c.wantAddress {
				t.Errorf("Send() address error = %+v, want address %q", ae, c.wantAddress)
			}
			if c.reusable {
				if err := conn.Reset(context.Background()); err != nil {
					t.Fatalf("Reset() error = %v", err)
				}
				if _, err := conn.Send(context.Background(), scUser, []string{scRcpt}, strings.NewReader("Subject: y\r\n\r\nbody\r\n"), nil); err != nil {
					t.Fatalf("Send() after Reset() error = %v", err)
				}
				if n := len(s.Messages()); n != 1 {
					t.Errorf("peer messages = %d, want 1", n)
				}
			} else if err := conn.Reset(context.Background()); !errors.Is(err, outgoing.ErrConnBroken) {
				t.Errorf("Reset() on a broken connection = %v, want ErrConnBroken", err)
			}
		})
	}
}

func refuseIf(cond bool, code int, enhanced, text string) error {
	if cond {
		return testpeer.SMTPReply(code, enhanced, text)
	}
	return nil
}

func TestSendStallAfterTheDotMayHaveDelivered(t *testing.T) {
	s, ca := scPeer(t, testpeer.SMTPImplicitTLS, &testpeer.SMTPScript{StallAt: testpeer.SMTPStageData})
	conn := scDial(t, scNetwork(ca, nil), scSettings(s, outgoing.SecuritySSL))
	ctx, cancel := context.WithTimeout(context.Background(), scTimeout)
	defer cancel()
	start := time.Now()
	_, err := conn.Send(ctx, scUser, []string{scRcpt}, strings.NewReader("Subject: x\r\n\r\nbody\r\n"), nil)
	se := scStepError(t, err)
	if se.Step != outgoing.StepData || !se.Timeout || !se.AfterData || se.Temporary() {
		t.Errorf("Send() = %+v (Temporary %v), want a data timeout after the dot, not temporary", se, se.Temporary())
	}
	if elapsed := time.Since(start); elapsed > scTimeout+time.Second {
		t.Errorf("Send() took %v, want under %v", elapsed, scTimeout+time.Second)
	}
}

func TestSendStepTimeoutWithoutDeadline(t *testing.T) {
	s, ca := scPeer(t, testpeer.SMTPImplicitTLS, &testpeer.SMTPScript{StallAt: testpeer.SMTPStageRcpt})
	n := scNetwork(ca, nil)
	n.StepTimeout = scTimeout
	conn := scDial(t, n, scSettings(s, outgoing.SecuritySSL))
	_, err := conn.Send(context.Background(), scUser, []string{scRcpt}, strings.NewReader("x\r\n"), nil)
	se := scStepError(t, err)
	if se.Step != outgoing.StepRcpt || !se.Timeout || !se.Temporary() || se.AfterData {
		t.Errorf("Send() = %+v, want a temporary rcpt timeout", se)
	}
}

func TestDialCancelledWhileStalled(t *testing.T) {
	s, ca := scPeer(t, testpeer.SMTPStartTLS, &testpeer.SMTPScript{StallAt: testpeer.SMTPStageAuth})
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		c   *outgoing.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := scNetwork(ca, nil).Dial(ctx, scSettings(s, outgoing.SecuritySTARTTLS), nil)
		done <- result{c, err}
	}()
	select {
	case <-s.Stalled():
	case <-time.After(scGuard):
		t.Fatal("the peer never stalled")
	}
	cancel()
	select {
	case r := <-done:
		if r.c != nil {
			_ = r.c.Close()
		}
		se := scStepError(t, r.err)
		if se.Step != outgoing.StepAuth || se.Timeout || !errors.Is(r.err, context.Canceled) || !se.Temporary() {
			t.Errorf("Dial() = %+v, want a cancelled auth step", se)
		}
	case <-time.After(scGuard):
		t.Fatal("Dial() did not return after cancel")
	}
}

func TestDialTraceAndFailures(t *testing.T) {
	ca := testpeer.NewCA(t)
	noAuth := testpeer.StartSMTP(t, &testpeer.SMTPOptions{Mode: testpeer.SMTPStartTLS, TLS: ca.ServerTLS(t, scNamedHost)})
	cases := []struct {
		name      string
		set       outgoing.Settings
		wantSteps []outgoing.Step
		wantCause error
	}{
		{
			name:      "server offers no AUTH",
			set:       scSettings(noAuth, outgoing.SecuritySTARTTLS),
			wantSteps: []outgoing.Step{outgoing.StepDNS, outgoing.StepTCP, outgoing.StepEHLO, outgoing.StepSTARTTLS, outgoing.StepAuth},
			wantCause: outgoing.ErrAuthNotOffered,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var trace []outgoing.StepResult
			conn, err := scNetwork(ca, nil).Dial(context.Background(), c.set, func(r outgoing.StepResult) { trace = append(trace, r) })
			if conn != nil {
				_ = conn.Close()
				t.Fatal("Dial() succeeded, want a failure")
			}
			se := scStepError(t, err)
			if !errors.Is(err, c.wantCause) || se.Temporary() {
				t.Errorf("Dial() error = %v, want %v, not temporary", err, c.wantCause)
			}
			var steps []outgoing.Step
			for _, r := range trace {
				steps = append(steps, r.Step)
			}
			if !slices.Equal(steps, c.wantSteps) {
				t.Errorf("Dial() traced %v, want %v", steps, c.wantSteps)
			}
			if last := trace[len(trace)-1]; last.OK || last.Step != se.Step || last.Code == "" || last.Explanation == "" {
				t.Errorf("Dial() last trace = %+v, want the failed step explained", last)
			}
		})
	}
}

func TestSendRefusesMalformedAddresses(t *testing.T) {
	cases := []struct {
		name     string
		from     string
		rcpts    []string
		wantStep outgoing.Step
	}{
		{"line break in sender", "a@example.org\r\nRCPT TO:<victim@example.net>", []string{scRcpt}, outgoing.StepMailFrom},
		{"empty sender", "", []string{scRcpt}, outgoing.StepMailFrom},
		{"bracket in recipient", scUser, []string{"b@example.net>"}, outgoing.StepRcpt},
		{"space in recipient", scUser, []string{"b @example.net"}, outgoing.StepRcpt},
		{"no recipients", scUser, nil, outgoing.StepRcpt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, ca := scPeer(t, testpeer.SMTPPlain, nil)
			set := scSettings(s, outgoing.SecurityNone)
			conn := scDial(t, scNetwork(ca, nil), set)
			_, err := conn.Send(context.Background(), c.from, c.rcpts, strings.NewReader("x\r\n"), nil)
			se := scStepError(t, err)
			if se.Step != c.wantStep || se.Reply != nil || se.Temporary() {
				t.Errorf("Send() = %+v, want a permanent failure at %q without a reply", se, c.wantStep)
			}
			if err := conn.Close(); err != nil {
				t.Errorf("Close() error = %v", err)
			}
			if tr := s.Sessions()[0].Transcript; strings.Contains(string(tr), "victim") || strings.Contains(string(tr), "RCPT") {
				t.Errorf("peer transcript = %q, want no RCPT", tr)
			}
		})
	}
}

func TestLoadRootCAs(t *testing.T) {
	ca := testpeer.NewCA(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := ca.WriteFile(t)
	cases := []struct {
		name    string
		file    string
		wantErr bool
	}{
		{"none", "", false},
		{"extra CA", good, false},
		{"missing", filepath.Join(dir, "missing.pem"), true},
		{"not PEM", write("junk.pem", "hello"), true},
		{"broken certificate", write("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pool, err := outgoing.LoadRootCAs(c.file)
			if c.wantErr {
				if err == nil || !strings.Contains(err.Error(), c.file) {
					t.Errorf("LoadRootCAs(%q) error = %v, want one naming the file", c.file, err)
				}
				return
			}
			if err != nil || pool == nil {
				t.Fatalf("LoadRootCAs(%q) = %v, %v, want a pool", c.file, pool, err)
			}
		})
	}

	// The extra CA is trusted for real.
	pool, err := outgoing.LoadRootCAs(good)
	if err != nil {
		t.Fatal(err)
	}
	s := testpeer.StartSMTP(t, &testpeer.SMTPOptions{
		Mode: testpeer.SMTPImplicitTLS, TLS: ca.ServerTLS(t, scNamedHost), Users: map[string]string{scUser: scPass},
	})
	n := scNetwork(nil, nil)
	n.RootCAs = pool
	scDial(t, n, scSettings(s, outgoing.SecuritySSL))
}

func TestStepErrorTemporary(t *testing.T) {
	cases := []struct {
		name string
		err  *outgoing.StepError
		want bool
	}{
		{"4xx reply", &outgoing.StepError{Step: outgoing.StepRcpt, Reply: &outgoing.Reply{Code: 451}}, true},
		{"5xx reply", &outgoing.StepError{Step: outgoing.StepRcpt, Reply: &outgoing.Reply{Code: 550}}, false},
		{"timeout", &outgoing.StepError{Step: outgoing.StepMailFrom, Timeout: true}, true},
		{"timeout after the dot", &outgoing.StepError{Step: outgoing.StepData, Timeout: true, AfterData: true}, false},
		{"lost after the dot", &outgoing.StepError{Step: outgoing.StepData, AfterData: true, Err: errors.New("EOF")}, false},
		{"network error", &outgoing.StepError{Step: outgoing.StepTCP, Err: errors.New("connection reset")}, true},
		{"no STARTTLS", &outgoing.StepError{Step: outgoing.StepSTARTTLS, Err: outgoing.ErrSTARTTLSNotOffered}, false},
		{"certificate", &outgoing.StepError{Step: outgoing.StepTLS, Err: &tls.CertificateVerificationError{Err: errors.New("x")}}, false},
		{"reply wrapped", &outgoing.StepError{Step: outgoing.StepAuth, Reply: &outgoing.Reply{Code: 454}, Err: &textproto.Error{Code: 454}}, true},
		{"nil", nil, false},
	}
	for _, c := range cases {
		if got := c.err.Temporary(); got != c.want {
			t.Errorf("%s: Temporary() = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestSendPipelinesWithRSETInFront: on a server that announces PIPELINING,
// a message's commands go out together, with the RSET that ended the
// previous transaction in front of them.
func TestSendPipelinesWithRSETInFront(t *testing.T) {
	// Plain text, so that the peer's transcript shows the commands.
	s, ca := scPeer(t, testpeer.SMTPPlain, nil)
	conn := scDial(t, scNetwork(ca, nil), scSettings(s, outgoing.SecurityNone))
	if !conn.Info().Pipelining {
		t.Fatal("the peer does not announce PIPELINING")
	}
	for i := range 3 {
		if _, err := conn.Send(context.Background(), scUser, []string{scRcpt}, strings.NewReader("Subject: x\r\n\r\nbody\r\n"), nil); err != nil {
			t.Fatalf("Send() %d error = %v", i, err)
		}
		if err := conn.Reset(context.Background()); err != nil {
			t.Fatalf("Reset() %d error = %v", i, err)
		}
	}
	if err := conn.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	if n := len(s.Messages()); n != 3 {
		t.Fatalf("peer messages = %d, want 3", n)
	}
	sessions := s.Sessions()
	if len(sessions) != 1 {
		t.Fatalf("peer sessions = %d, want 1", len(sessions))
	}
	tx := "MAIL FROM:<" + scUser + "> BODY=8BITMIME\r\nRCPT TO:<" + scRcpt + ">\r\nDATA\r\n"
	got := string(sessions[0].Transcript)
	if want := tx + "Subject: x\r\n\r\nbody\r\n.\r\nRSET\r\n" + tx; !strings.Contains(got, want) {
		t.Errorf("transcript = %q, want it to hold %q", got, want)
	}
	if n := strings.Count(got, "RSET\r\n"); n != 2 {
		t.Errorf("transcript has %d RSET, want 2 (between the three messages, none before QUIT)", n)
	}
}
