package api

import "net/http"

// routeTable is every route mailsync serves.
func (s *Server) routeTable() []route {
	return []route{
		{Method: "GET", Path: "/healthz", Access: Public, raw: http.HandlerFunc(s.healthz)},
		{Method: "GET", Path: "/readyz", Access: Public, raw: http.HandlerFunc(s.readyz)},
		{Method: "GET", Path: "/metrics", Access: Public, raw: s.metricsHandler()},
		{Method: "GET", Path: "/api/v1/me", Access: User, handle: s.me},

		{Method: "GET", Path: "/api/v1/smtp-accounts", Access: Admin, handle: s.listAccounts},
		{Method: "POST", Path: "/api/v1/smtp-accounts", Access: Admin, handle: s.createAccount},
		{Method: "POST", Path: "/api/v1/smtp-accounts/check", Access: Admin, handle: s.checkAccount},
		{Method: "GET", Path: "/api/v1/smtp-accounts/{id}", Access: Admin, handle: s.getAccount},
		{Method: "PATCH", Path: "/api/v1/smtp-accounts/{id}", Access: Admin, handle: s.updateAccount},
		{Method: "DELETE", Path: "/api/v1/smtp-accounts/{id}", Access: Admin, handle: s.deleteAccount},

		{Method: "GET", Path: "/api/v1/providers", Access: User, handle: s.listProviders},
		{Method: "GET", Path: "/api/v1/providers/lookup", Access: User, handle: s.lookupProvider},
		{Method: "GET", Path: "/api/v1/mailboxes", Access: User, handle: s.listMailboxes},
		{Method: "POST", Path: "/api/v1/mailboxes", Access: User, handle: s.connectMailbox},
		{Method: "GET", Path: "/api/v1/mailboxes/{id}", Access: User, handle: s.getMailbox},
		{Method: "PATCH", Path: "/api/v1/mailboxes/{id}", Access: User, handle: s.updateMailbox},
		{Method: "DELETE", Path: "/api/v1/mailboxes/{id}", Access: User, handle: s.deleteMailbox},
		{Method: "GET", Path: "/api/v1/mailboxes/{id}/folders", Access: User, handle: s.listFolders},
		{Method: "PUT", Path: "/api/v1/mailboxes/{id}/folders", Access: User, handle: s.setFolders},
		{Method: "PUT", Path: "/api/v1/mailboxes/{id}/outgoing", Access: User, handle: s.setOutgoing},
		{Method: "POST", Path: "/api/v1/mailboxes/{id}/outgoing/check", Access: User, handle: s.checkOutgoing},
		{Method: "GET", Path: "/api/v1/mailboxes/{id}/settings", Access: User, handle: s.mailboxSettings},
		{Method: "GET", Path: "/api/v1/mailboxes/{id}/messages", Access: User, handle: s.listMessages},
		{Method: "GET", Path: "/api/v1/mailboxes/{id}/messages/{message_id}", Access: User, handle: s.getMessage},
		{Method: "POST", Path: "/api/v1/mailboxes/{id}/sync", Access: User, handle: s.syncMailbox},

		{Method: "GET", Path: "/api/v1/senders", Access: User, handle: s.listSenders},
		{Method: "POST", Path: "/api/v1/senders", Access: User, handle: s.createSender},
		{Method: "GET", Path: "/api/v1/senders/{id}", Access: User, handle: s.getSender},
		{Method: "PATCH", Path: "/api/v1/senders/{id}", Access: User, handle: s.updateSender},
		{Method: "DELETE", Path: "/api/v1/senders/{id}", Access: User, handle: s.deleteSender},
		{Method: "POST", Path: "/api/v1/senders/confirmations", Access: User, handle: s.startConfirmation},
		{Method: "POST", Path: "/api/v1/senders/confirmations/{id}", Access: User, handle: s.confirmSender},

		{Method: "POST", Path: "/api/v1/outbox", Access: User, handle: s.submit},
		{Method: "POST", Path: "/api/v1/outbox/raw", Access: User, handle: s.submitRaw},
		{Method: "GET", Path: "/api/v1/outbox/{id}", Access: User, handle: s.getOutbox},
		{Method: "GET", Path: "/api/v1/send-log", Access: User, handle: s.listLog},
	}
}
