// The dashboards' name filters at scale: a text box (data-names="team" or "feature") whose
// datalist is filled from /reports/api/names as the reader types. Without this script the
// box still works: an exact name filters the page.
(function () {
  "use strict";
  document.querySelectorAll("input[data-names]").forEach(function (input) {
    var list = document.getElementById(input.getAttribute("list"));
    var timer = null;
    var asked = "";
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var query = input.value.trim();
        if (query === asked) return;
        asked = query;
        var url = input.dataset.namesUrl + "?kind=" + encodeURIComponent(input.dataset.names) +
          "&q=" + encodeURIComponent(query);
        fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (answer) { return answer.ok ? answer.json() : { names: [] }; })
          .then(function (body) {
            if (query !== asked) return; // a later keystroke asked again
            list.replaceChildren.apply(list, body.names.map(function (name) {
              var option = document.createElement("option");
              option.value = name;
              return option;
            }));
          })
          .catch(function () {});
      }, 150);
    });
  });
})();
