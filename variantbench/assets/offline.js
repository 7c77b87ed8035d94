/* variantbench: asv's pages opened from disk. asv fetches its JSON (index, info, graphs, regressions)
   with $.ajax, which browsers refuse for file:// pages. `variantbench report` embeds every JSON file
   of the site in offline-data.js (window.VARIANTBENCH_OFFLINE, keyed by path); this jQuery transport
   answers those requests from it, and leaves any other request to jQuery. */
(function ($) {
  var files = window.VARIANTBENCH_OFFLINE || {};
  $.ajaxTransport("+*", function (options) {
    var path = decodeURIComponent(options.url.split("?")[0]);
    var known = Object.prototype.hasOwnProperty.call(files, path);
    if (!known && !/\.json$/.test(path)) {
      return undefined;
    }
    return {
      send: function (headers, complete) {
        /* A JSON file the site lacks is a 404, as a server would answer: asv then shows "no data". */
        setTimeout(function () {
          if (known) { complete(200, "success", { text: files[path] }); } else { complete(404, "not found"); }
        }, 0);
      },
      abort: function () {}
    };
  });
})(jQuery);
