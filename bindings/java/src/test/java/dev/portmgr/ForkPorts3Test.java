package dev.portmgr;

/** Fork 3 of 4: see ForkPortsBase. */
class ForkPorts3Test extends ForkPortsBase {
    @Override
    int fork() {
        return 3;
    }
}
