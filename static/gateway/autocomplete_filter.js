// The usage list's team/feature/key filters (gateway/adminfilters.py): choosing a name in the
// search box (the admin's select2) reloads the list filtered by it; clearing it drops the filter.
"use strict";
{
  const $ = django.jQuery;
  $(document).on("change", ".gateway-autocomplete-filter select", function () {
    if (!this.value) {
      this.disabled = true; // no empty parameter in the URL
    }
    this.form.submit();
  });
}
