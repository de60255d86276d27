from bulktag.sim.cli import main

main()
