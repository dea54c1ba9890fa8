// NovaPulse console: behaviour that must not be inline (the Content-Security-Policy forbids inline script).
document.addEventListener("click", (event) => {
  const target = event.target.closest("[data-confirm]");
  if (target && !window.confirm(target.getAttribute("data-confirm"))) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);
document.addEventListener("click", (event) => {
  const target = event.target.closest("[data-copy]");
  if (target && navigator.clipboard) {
    navigator.clipboard.writeText(target.getAttribute("data-copy"));
  }
});
