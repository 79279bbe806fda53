"""The Ray-side helpers the stages share: connecting to Ray and the custom resources of the cluster's node
types (`resources`), and the sandbox actor pool (`sandbox_pool`)."""
