// The map of the incidents listed: markers read from the list itself, so they refresh with it.
// With no tiles configured (or none reachable) the markers and place names show on a plain background.
"use strict";
(function () {
  var box = document.getElementById("map");
  var list = document.getElementById("incident-list");
  if (!box || !list || typeof L === "undefined") return;
  var colours = { critical: "#9b1c1c", high: "#d9622b", medium: "#d9a72b", low: "#4f7a28" };
  var map = L.map(box, { zoomControl: true, attributionControl: true, maxZoom: 18 }); // with no tiles, the clusters need it
  var tiles = box.getAttribute("data-tiles");
  if (tiles) {
    L.tileLayer(tiles, { maxZoom: 18, attribution: box.getAttribute("data-attribution") || "" }).addTo(map);
  }
  map.setView([0.5, 25.0], 5); // before any layer: the cluster layer needs a view
  var cluster = L.markerClusterGroup({ maxClusterRadius: 40, showCoverageOnHover: false });
  map.addLayer(cluster);
  var first = true;

  function draw() {
    cluster.clearLayers();
    var bounds = [];
    list.querySelectorAll("[data-code]").forEach(function (item) {
      var lat = parseFloat(item.getAttribute("data-lat"));
      var lon = parseFloat(item.getAttribute("data-lon"));
      if (isNaN(lat) || isNaN(lon)) return;
      var code = item.getAttribute("data-code");
      var marker = L.circleMarker([lat, lon], {
        radius: 9, weight: 2, color: "#fff", fillOpacity: 0.9,
        fillColor: colours[item.getAttribute("data-severity")] || "#555"
      });
      // textContent, never HTML: a place name is text someone typed.
      var label = document.createElement("span");
      label.textContent = code + " " + (item.getAttribute("data-place") || "");
      marker.bindTooltip(label, { permanent: true, direction: "right", className: "map-label" });
      marker.on("click", function () { window.location.href = "/incidents/" + encodeURIComponent(code); });
      cluster.addLayer(marker);
      bounds.push([lat, lon]);
    });
    if (first && bounds.length) {
      map.fitBounds(bounds, { maxZoom: 11, padding: [20, 20] });
      first = false;
    }
  }
  draw();
  list.addEventListener("kengele:refreshed", draw);
})();
