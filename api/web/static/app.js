// mailsync pages: small enhancements only. Every form works without this
// file; with it, the Check buttons show their report without reloading the
// page, a provider preset fills in its IMAP settings, and delete buttons
// ask first.
(function () {
  'use strict';

  // Check buttons: POST the form to the button's data-check-url and show the
  // HTML fragment the server renders (already escaped and localised).
  document.querySelectorAll('button[data-check-url]').forEach(function (btn) {
    btn.addEventListener('click', function (ev) {
      var form = btn.form;
      var out = document.getElementById('check-result');
      if (!form || !out || !window.fetch) {
        return; // fall back to the plain form submission
      }
      ev.preventDefault();
      var data = new URLSearchParams(new FormData(form));
      data.set('action', 'check');
      btn.disabled = true;
      out.setAttribute('aria-busy', 'true');
      out.innerHTML = '';
      var wait = document.createElement('p');
      wait.className = 'checking';
      wait.textContent = btn.getAttribute('data-checking') || '…';
      out.appendChild(wait);
      fetch(btn.getAttribute('data-check-url'), {
        method: 'POST',
        body: data,
        credentials: 'same-origin',
        headers: { 'Accept': 'text/html' }
      }).then(function (resp) {
        return resp.text();
      }).then(function (html) {
        out.innerHTML = html;
      }).catch(function () {
        out.textContent = btn.getAttribute('data-check-error') || 'Error';
      }).finally(function () {
        btn.disabled = false;
        out.removeAttribute('aria-busy');
      });
    });
  });

  // Provider presets: choosing one fills in its IMAP server, port and
  // security, and the login in the provider's form.
  var provider = document.getElementById('f-provider');
  if (provider) {
    var host = document.getElementById('f-imap-host');
    var port = document.getElementById('f-imap-port');
    var sec = document.getElementById('f-imap-security');
    var login = document.getElementById('f-imap-login');
    var email = document.getElementById('f-email');
    var apply = function () {
      var opt = provider.options[provider.selectedIndex];
      var preset = opt && opt.value !== '';
      [host, port, login].forEach(function (el) { if (el) { el.readOnly = preset; } });
      if (!preset) {
        return;
      }
      host.value = opt.getAttribute('data-host');
      port.value = opt.getAttribute('data-port');
      sec.value = opt.getAttribute('data-security');
      var addr = email ? email.value.trim() : '';
      if (addr !== '') {
        var at = addr.lastIndexOf('@');
        login.value = opt.getAttribute('data-login-form') === 'local' && at > 0 ? addr.slice(0, at) : addr;
      }
    };
    provider.addEventListener('change', apply);
    if (email) {
      email.addEventListener('change', apply);
    }
    apply();
  }

  // Forms that delete something ask first.
  document.querySelectorAll('form[data-confirm]').forEach(function (form) {
    form.addEventListener('submit', function (ev) {
      if (!window.confirm(form.getAttribute('data-confirm'))) {
        ev.preventDefault();
      }
    });
  });

  // Move focus to the error summary, so keyboard and screen reader users
  // land on what needs fixing.
  var summary = document.getElementById('error-summary');
  if (summary) {
    summary.focus();
  }
}());
