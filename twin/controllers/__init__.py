"""The twin's in-process controllers (store.subscribe + store writes): workloads, cert-manager, cainjector,
admission webhooks, KServe."""
