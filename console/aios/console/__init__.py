"""The aios console: approvals inbox, actions timeline and site overview for the people who
approve and act. Users sign in with a token the cluster vouches for (TokenReview); what
they may see and do follows their RBAC (SubjectAccessReview), and what they decide is
created with their own token, so the API server and the admission webhooks judge it."""
