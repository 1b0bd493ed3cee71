// Sorts a gallery group's cards by the absolute score gap (largest first) or back to table order.
(function () {
  function value(card, key) {
    if (key === "order") { return -Number(card.getAttribute("data-order")); }
    var v = parseFloat(card.getAttribute("data-" + key));
    return isNaN(v) ? -Infinity : Math.abs(v);
  }
  var buttons = document.querySelectorAll("button[data-sort]");
  Array.prototype.forEach.call(buttons, function (button) {
    button.addEventListener("click", function () {
      var key = button.getAttribute("data-sort");
      var list = document.getElementById(button.getAttribute("data-target"));
      if (!list) { return; }
      var cards = Array.prototype.slice.call(list.children);
      cards.sort(function (a, b) { return value(b, key) - value(a, key); });
      cards.forEach(function (card) { list.appendChild(card); });
    });
  });
})();
