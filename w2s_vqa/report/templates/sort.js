// Sorts a gallery group's cards by the absolute score gap (largest first) or back to table
// order: the buttons, or the page's address ending in #sort=student-gap (or teacher-gap) for every group.
(function () {
  function value(card, key) {
    if (key === "order") { return -Number(card.getAttribute("data-order")); }
    var v = parseFloat(card.getAttribute("data-" + key));
    return isNaN(v) ? -Infinity : Math.abs(v);
  }
  function sortList(list, key) {
    var cards = Array.prototype.slice.call(list.children);
    cards.sort(function (a, b) { return value(b, key) - value(a, key); });
    cards.forEach(function (card) { list.appendChild(card); });
  }
  var buttons = document.querySelectorAll("button[data-sort]");
  Array.prototype.forEach.call(buttons, function (button) {
    button.addEventListener("click", function () {
      var list = document.getElementById(button.getAttribute("data-target"));
      if (list) { sortList(list, button.getAttribute("data-sort")); }
    });
  });
  var asked = /^#sort=(student-gap|teacher-gap|order)$/.exec(window.location.hash);
  if (asked) {
    Array.prototype.forEach.call(document.querySelectorAll("ol.cards"), function (list) {
      sortList(list, asked[1]);
    });
  }
})();
