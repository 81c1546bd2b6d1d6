from grunet.cli import console

console()
