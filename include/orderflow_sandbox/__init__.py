"""The OrderFlow sandbox: a stand-in distributor (ERP, WMS, carriers, tax, credit, screening, portal, EDI, mailbox) and its order-day generator."""
