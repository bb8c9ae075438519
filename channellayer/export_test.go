package channellayer

// MovedTo is movedTo, for TestMovedTo, which needs a cluster from
// layertest and so lives outside the package.
var MovedTo = movedTo
