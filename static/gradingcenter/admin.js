/* Grading Center additions to the Jazzmin admin, loaded on every admin page (JAZZMIN_SETTINGS custom_js). */
"use strict";
(function () {
  // AdminLTE 4 turns every `.navbar-nav` / `.nav` list without a role into a "navigation" landmark once
  // the page has loaded, so screen readers no longer hear a list (and hear a dozen unnamed landmarks).
  // This runs first: a list keeps its own role. The sidebar's list says so in templates/admin/base.html.
  for (const list of document.querySelectorAll("ul.navbar-nav, ul.nav")) {
    if (!list.hasAttribute("role")) list.setAttribute("role", "list");
  }
  // The top bar's menu button is an icon alone.
  const toggle = document.querySelector('[data-lte-toggle="sidebar"]');
  if (toggle) toggle.setAttribute("aria-label", "Show or hide the menu");
  for (const icon of document.querySelectorAll("#jazzy-navbar i.fas, #jazzy-navbar i.far")) {
    icon.setAttribute("aria-hidden", "true");
  }
})();
