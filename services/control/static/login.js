// Logs a browser in: the operator token comes from the form or from the link's fragment
// (#token=...), which browsers never send to a server. The server answers with an HttpOnly
// session cookie; the page then goes to the control room.
const $ = (id) => document.getElementById(id);

const REASONS = {
  401: "密钥错误或已吊销 The token is wrong or revoked.",
  403: "此密钥不能打开控制室 This token does not open the control room.",
  429: "尝试太多次 Too many attempts: wait a little and try again.",
};

async function logIn(token) {
  $("status").textContent = "登录中 Logging in…";
  document.body.dataset.state = "logging-in";
  const response = await fetch("/api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
    credentials: "same-origin",
  });
  if (response.ok) {
    window.location.replace("/");
    return;
  }
  const error = await response.json().catch(() => ({}));
  document.body.dataset.state = "refused";
  $("status").textContent = REASONS[response.status] || error.message || `Error ${response.status}`;
}

const reason = new URLSearchParams(window.location.search).get("reason");
if (reason === "session") {
  $("status").textContent = "会话已结束，请重新登录 Your session ended: log in again.";
}
const fragment = new URLSearchParams(window.location.hash.slice(1));
if (fragment.get("token")) {
  const token = fragment.get("token");
  // Out of the address bar and the history before anything else happens.
  history.replaceState(null, "", window.location.pathname);
  logIn(token);
}
$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (token) logIn(token);
});
