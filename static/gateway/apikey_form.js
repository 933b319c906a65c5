// The API key form: the feature dropdown lists only the chosen team's features.
// (The server refuses a feature of another team whatever is sent: ApiKey.clean.)
"use strict";
(function () {
  function filterFeatures() {
    var team = document.getElementById("id_team");
    var feature = document.getElementById("id_feature");
    if (!team || !feature) return;
    Array.prototype.forEach.call(feature.options, function (option) {
      var owner = option.getAttribute("data-team");
      var show = !owner || (team.value !== "" && owner === team.value);
      option.hidden = !show;
      option.disabled = !show;
      if (!show && option.selected) feature.value = "";
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var team = document.getElementById("id_team");
    if (!team) return;
    team.addEventListener("change", filterFeatures);
    filterFeatures();
  });
})();
